// The Windows mechanics of the test support (common/test_support.hpp, windows_support.hpp): temp
// directories, helper processes through CreateProcessW and pipes, handles, the counter file.
#include "windows/windows_support.hpp"  // First: <windows.h> before <shellapi.h>.

#include <shellapi.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

namespace fasteners_test {

namespace fs = std::filesystem;

namespace {

constexpr DWORD k_counter_width = 20;

[[noreturn]] void throw_last_error(const std::string& what) {
  throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), what);
}

std::wstring unique_suffix() {
  static std::atomic<unsigned> counter{0};
  return std::to_wstring(::GetCurrentProcessId()) + L"-" + std::to_wstring(::GetTickCount64()) +
         L"-" + std::to_wstring(counter++);
}

// Held while a child starts, so that it inherits no other child's pipe ends.
std::mutex& spawn_mutex() {
  static std::mutex mutex;
  return mutex;
}

// An inheritable copy of this process's `handle` for a child's standard stream, or nullptr.
HANDLE inheritable_copy(HANDLE handle) {
  HANDLE copy = nullptr;
  if (handle == nullptr || handle == INVALID_HANDLE_VALUE ||
      !::DuplicateHandle(::GetCurrentProcess(), handle, ::GetCurrentProcess(), &copy, 0, TRUE,
                         DUPLICATE_SAME_ACCESS)) {
    return nullptr;
  }
  return copy;
}

// SystemExtendedHandleInformation (64): every handle of the system, with its process.
struct system_handle_entry {
  void* object;
  ULONG_PTR process_id;
  ULONG_PTR handle;
  ULONG access;
  USHORT creator_back_trace_index;
  USHORT object_type_index;
  ULONG attributes;
  ULONG reserved;
};
struct system_handle_information {
  ULONG_PTR count;
  ULONG_PTR reserved;
  system_handle_entry handles[1];
};

// Whether this runs under Wine, whose ntdll exports wine_get_version.
bool under_wine() {
  static const bool wine =
      ::GetProcAddress(::GetModuleHandleW(L"ntdll.dll"), "wine_get_version") != nullptr;
  return wine;
}

// Under Wine: the handles of this process, found by asking about each handle value in turn. Wine
// 8's server has crashed while listing the whole system's handles as other processes started and
// ended, so this asks about this process's own handles only. Wine hands out the lowest free values
// (4, 8, 12, ...), so the first 4096 cover far more handles than a test opens.
std::vector<HANDLE> own_handles_probed() {
  std::vector<HANDLE> handles;
  for (std::uintptr_t value = 4; value <= 4 * 4096; value += 4) {
    DWORD flags = 0;
    const HANDLE h = reinterpret_cast<HANDLE>(value);
    if (::GetHandleInformation(h, &flags)) handles.push_back(h);
  }
  return handles;
}

// The handles of this process, from the system's handle table.
std::vector<HANDLE> own_handles() {
  if (under_wine()) return own_handles_probed();
  // Looked up by name: winternl.h types the class as an enum that lacks this value.
  using query_function = LONG(WINAPI*)(ULONG, void*, ULONG, ULONG*);
  const auto query = reinterpret_cast<query_function>(reinterpret_cast<void (*)()>(
      ::GetProcAddress(::GetModuleHandleW(L"ntdll.dll"), "NtQuerySystemInformation")));
  if (query == nullptr) throw std::runtime_error("no NtQuerySystemInformation");
  std::vector<unsigned char> buffer(1 << 16);
  for (;;) {
    ULONG needed = 0;
    const LONG status = query(64, buffer.data(), static_cast<ULONG>(buffer.size()), &needed);
    if (status == static_cast<LONG>(0xC0000004L)) {  // STATUS_INFO_LENGTH_MISMATCH
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (status != 0) throw std::runtime_error("NtQuerySystemInformation failed");
    const auto* info = reinterpret_cast<const system_handle_information*>(buffer.data());
    std::vector<HANDLE> handles;
    for (ULONG_PTR i = 0; i < info->count; ++i) {
      if (info->handles[i].process_id == ::GetCurrentProcessId()) {
        handles.push_back(reinterpret_cast<HANDLE>(info->handles[i].handle));
      }
    }
    return handles;
  }
}

std::pair<std::uint64_t, std::uint64_t> identity_of(const BY_HANDLE_FILE_INFORMATION& info) {
  return {info.dwVolumeSerialNumber,
          (std::uint64_t{info.nFileIndexHigh} << 32) | info.nFileIndexLow};
}

OVERLAPPED at_offset(std::uint64_t offset) {
  OVERLAPPED ov{};
  ov.Offset = static_cast<DWORD>(offset & 0xffffffffu);
  ov.OffsetHigh = static_cast<DWORD>(offset >> 32);
  return ov;
}

// Whether this system deletes a file in `dir` that is still open at once (POSIX semantics).
bool posix_delete_supported(const fs::path& dir) {
  const auto path = dir / "posix-delete-probe";
  { foreign_handle create(path); }
  const HANDLE file = ::CreateFileW(path.c_str(), DELETE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                                    nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) return false;
  DWORD flags = 0x1 | 0x2;  // FILE_DISPOSITION_FLAG_DELETE | FILE_DISPOSITION_FLAG_POSIX_SEMANTICS
  const bool deleted = ::SetFileInformationByHandle(
      file, static_cast<FILE_INFO_BY_HANDLE_CLASS>(21), &flags, sizeof flags);
  ::CloseHandle(file);
  if (!deleted) fs::remove(path);
  return deleted;
}

}  // namespace

bool running_on_wine() {
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

temp_dir::temp_dir() {
  wchar_t buffer[MAX_PATH + 1];
  const DWORD n = ::GetTempPathW(MAX_PATH + 1, buffer);
  if (n == 0 || n > MAX_PATH) throw_last_error("GetTempPathW");
  path_ = fs::path(buffer) / (L"fasteners-windows-test-" + unique_suffix());
  fs::create_directories(path_);
}

temp_dir::~temp_dir() {
  // A helper that was just terminated may still be closing its handles: retry for a while.
  for (int attempt = 0; attempt < 50; ++attempt) {
    std::error_code ec;
    fs::remove_all(path_, ec);
    if (!ec) return;
    ::Sleep(100);
  }
}

struct child_process::state {
  HANDLE process = nullptr;
  DWORD id = 0;
  HANDLE in = nullptr;   // writes to the child's stdin
  HANDLE out = nullptr;  // reads the child's stdout

  ~state() {
    for (const HANDLE h : {process, in, out}) {
      if (h != nullptr) ::CloseHandle(h);
    }
  }
};

child_process::child_process(const std::vector<std::string>& argv) : state_(new state) {
  std::wstring command;
  for (const auto& arg : argv) command += (command.empty() ? L"" : L" ") + quote(to_wide(arg));
  std::lock_guard<std::mutex> guard(spawn_mutex());
  SECURITY_ATTRIBUTES inherit{static_cast<DWORD>(sizeof(SECURITY_ATTRIBUTES)), nullptr, TRUE};
  HANDLE child_in = nullptr;
  HANDLE child_out = nullptr;
  if (!::CreatePipe(&child_in, &state_->in, &inherit, 0)) throw_last_error("CreatePipe");
  if (!::CreatePipe(&state_->out, &child_out, &inherit, 0)) {
    ::CloseHandle(child_in);
    throw_last_error("CreatePipe");
  }
  ::SetHandleInformation(state_->in, HANDLE_FLAG_INHERIT, 0);
  ::SetHandleInformation(state_->out, HANDLE_FLAG_INHERIT, 0);
  const HANDLE child_err = inheritable_copy(::GetStdHandle(STD_ERROR_HANDLE));
  STARTUPINFOW startup{};
  startup.cb = sizeof startup;
  startup.dwFlags = STARTF_USESTDHANDLES;
  startup.hStdInput = child_in;
  startup.hStdOutput = child_out;
  startup.hStdError = child_err;
  PROCESS_INFORMATION info{};
  BOOL started = FALSE;
  DWORD error = 0;
  // Wine's process creation now and then fails at once with ERROR_INTERNAL_ERROR, for no reason
  // of the test's: try again a few times before giving up.
  for (int attempt = 0; attempt < 5; ++attempt) {
    started = ::CreateProcessW(nullptr, command.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr,
                               &startup, &info);
    error = ::GetLastError();
    if (started || error != ERROR_INTERNAL_ERROR) break;
    ::Sleep(50);
  }
  for (const HANDLE h : {child_in, child_out, child_err}) {
    if (h != nullptr) ::CloseHandle(h);
  }
  if (!started) {
    throw std::system_error(static_cast<int>(error), std::system_category(),
                            "CreateProcessW " + argv.at(0));
  }
  ::CloseHandle(info.hThread);
  state_->process = info.hProcess;
  state_->id = info.dwProcessId;
}

child_process::~child_process() {
  if (state_ && running()) {
    ::TerminateProcess(state_->process, k_killed);
    ::WaitForSingleObject(state_->process, INFINITE);
  }
}

child_process::child_process(child_process&& other) noexcept = default;

int child_process::id() const noexcept { return static_cast<int>(state_->id); }

bool child_process::read_output(steady::time_point deadline) {
  while (state_->out != nullptr) {
    DWORD available = 0;
    char chunk[256];
    DWORD n = 0;
    const bool ended =
        !::PeekNamedPipe(state_->out, nullptr, 0, nullptr, &available, nullptr) ||
        (available > 0 &&
         (!::ReadFile(state_->out, chunk, std::min<DWORD>(available, sizeof chunk), &n, nullptr) ||
          n == 0));
    if (ended) {  // The child closed its stdout.
      ::CloseHandle(state_->out);
      state_->out = nullptr;
    } else if (n > 0) {
      output_.append(chunk, n);
      return true;
    } else if (steady::now() >= deadline) {
      return false;
    } else {
      ::Sleep(1);
    }
  }
  return false;
}

bool child_process::write_line(const std::string& line) {
  if (state_->in == nullptr) return false;
  const std::string data = line + "\n";
  DWORD written = 0;
  return ::WriteFile(state_->in, data.data(), static_cast<DWORD>(data.size()), &written, nullptr) &&
         written == data.size();
}

void child_process::close_stdin() {
  if (state_->in != nullptr) ::CloseHandle(state_->in);
  state_->in = nullptr;
}

bool child_process::running() const {
  return state_->process != nullptr && ::WaitForSingleObject(state_->process, 0) == WAIT_TIMEOUT;
}

void child_process::kill() {
  if (state_->process != nullptr) ::TerminateProcess(state_->process, k_killed);
}

int child_process::wait(std::chrono::milliseconds timeout) {
  if (state_->process == nullptr) return -1;
  if (::WaitForSingleObject(state_->process, static_cast<DWORD>(timeout.count())) !=
      WAIT_OBJECT_0) {
    std::cerr << "process " << state_->id << " did not end within " << timeout.count()
              << " ms; killing it\n";
    ::TerminateProcess(state_->process, k_killed);
    ::WaitForSingleObject(state_->process, INFINITE);
    return -1;
  }
  DWORD code = 0;
  ::GetExitCodeProcess(state_->process, &code);
  return static_cast<int>(code);
}

std::size_t count_open_handles() {
  // The first count comes after locks on a file of its own, waits and threads that contend, so
  // that what the runtime creates once per process and keeps (winpthreads keeps a handle once two
  // threads have waited on a condition variable at once, for example) counts from the start.
  static const bool settled = [] {
    temp_dir dir;
    const auto path = dir.path() / "lock";
    kind_lock holder(kind::write, path);
    thread_holder held(holder);
    kind_lock waiter(kind::write, path);
    bool ok = held.wait_held() && !waiter.acquire(false) && !waiter.acquire(true, 10ms);
    ok = held.release() && ok;
    fasteners::interprocess_reader_writer_lock shared(path);
    latch all_reading(4);
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t) {
      readers.emplace_back([&] {
        for (int i = 0; i < 100; ++i) {
          shared.lock_shared();
          shared.unlock_shared();
        }
        shared.lock_shared();
        all_reading.arrive_and_wait_for();
        shared.unlock_shared();
      });
    }
    for (auto& r : readers) r.join();
    return ok;
  }();
  if (!settled) throw std::runtime_error("the lock cycle before counting handles failed");
  // GetProcessHandleCount reports 0 under Wine; the system's handle table is read there.
  DWORD count = 0;
  if (::GetProcessHandleCount(::GetCurrentProcess(), &count) && count > 0) return count;
  return own_handles().size();
}

std::vector<std::intptr_t> handles_referring_to(const fs::path& path) {
  const auto want = file_identity(path);
  std::vector<std::intptr_t> found;
  for (const HANDLE h : own_handles()) {
    BY_HANDLE_FILE_INFORMATION info{};
    if (::GetFileType(h) == FILE_TYPE_DISK && ::GetFileInformationByHandle(h, &info) &&
        identity_of(info) == want) {
      found.push_back(reinterpret_cast<std::intptr_t>(h));
    }
  }
  return found;
}

bool inherited_by_children(std::intptr_t handle) {
  DWORD flags = 0;
  if (!::GetHandleInformation(reinterpret_cast<HANDLE>(handle), &flags)) {
    throw_last_error("GetHandleInformation");
  }
  return (flags & HANDLE_FLAG_INHERIT) != 0;
}

std::pair<std::uint64_t, std::uint64_t> file_identity(const fs::path& path) {
  const HANDLE handle = ::CreateFileW(path.c_str(), FILE_READ_ATTRIBUTES,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                                      nullptr, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, nullptr);
  if (handle == INVALID_HANDLE_VALUE) throw_last_error("CreateFileW " + arg_of(path));
  BY_HANDLE_FILE_INFORMATION info{};
  const BOOL ok = ::GetFileInformationByHandle(handle, &info);
  ::CloseHandle(handle);
  if (!ok) throw_last_error("GetFileInformationByHandle " + arg_of(path));
  return identity_of(info);
}

fs::path null_device() { return L"NUL"; }

bool is_character_device(const fs::path& path) {
  const HANDLE handle = ::CreateFileW(path.c_str(), 0, FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr,
                                      OPEN_EXISTING, 0, nullptr);
  if (handle == INVALID_HANDLE_VALUE) return false;
  const bool device = ::GetFileType(handle) == FILE_TYPE_CHAR;
  ::CloseHandle(handle);
  return device;
}

bool remove_on_release_deletes(const fs::path& dir, kind k) {
  return k != kind::read && posix_delete_supported(dir);
}

counter_file::counter_file(const fs::path& path)
    : handle_(reinterpret_cast<std::intptr_t>(::CreateFileW(
          path.c_str(), GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr,
          OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr))) {
  if (reinterpret_cast<HANDLE>(handle_) == INVALID_HANDLE_VALUE) {
    throw_last_error("CreateFileW " + arg_of(path));
  }
}

counter_file::~counter_file() { ::CloseHandle(reinterpret_cast<HANDLE>(handle_)); }

void counter_file::increment() {
  const auto file = reinterpret_cast<HANDLE>(handle_);
  char text[k_counter_width + 1] = {};
  DWORD n = 0;
  OVERLAPPED at_start = at_offset(0);
  if (!::ReadFile(file, text, k_counter_width, &n, &at_start) || n != k_counter_width) {
    throw_last_error("ReadFile counter");
  }
  const long value = std::strtol(text, nullptr, 10);
  ::SwitchToThread();
  std::snprintf(text, sizeof text, "%020ld", value + 1);
  at_start = at_offset(0);
  if (!::WriteFile(file, text, k_counter_width, &n, &at_start) || n != k_counter_width) {
    throw_last_error("WriteFile counter");
  }
}

std::vector<std::string> command_line(int, char**) {
  // The arguments of main() are in the ANSI code page; the wide command line has every path.
  int argc = 0;
  wchar_t** argv = ::CommandLineToArgvW(::GetCommandLineW(), &argc);
  if (argv == nullptr) throw_last_error("CommandLineToArgvW");
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) args.push_back(to_narrow(argv[i]));
  ::LocalFree(argv);
  return args;
}

void prepare_test_process() {}

std::string this_program() {
  std::wstring self(MAX_PATH, L'\0');
  for (;;) {
    const DWORD n = ::GetModuleFileNameW(nullptr, self.data(), static_cast<DWORD>(self.size()));
    if (n == 0) throw_last_error("GetModuleFileNameW");
    if (n < self.size()) {
      self.resize(n);
      return to_narrow(self);
    }
    self.resize(self.size() * 2);
  }
}

foreign_handle::foreign_handle(const fs::path& path)
    : handle_(::CreateFileW(path.c_str(), GENERIC_READ | GENERIC_WRITE,
                            FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr, OPEN_ALWAYS,
                            FILE_ATTRIBUTE_NORMAL, nullptr)) {
  if (handle_ == INVALID_HANDLE_VALUE) throw_last_error("CreateFileW " + arg_of(path));
}

foreign_handle::~foreign_handle() { ::CloseHandle(handle_); }

bool foreign_handle::try_lock(bool exclusive, std::uint64_t offset) {
  OVERLAPPED ov = at_offset(offset);
  const DWORD flags = LOCKFILE_FAIL_IMMEDIATELY | (exclusive ? LOCKFILE_EXCLUSIVE_LOCK : 0);
  if (::LockFileEx(handle_, flags, 0, 1, 0, &ov)) return true;
  if (::GetLastError() == ERROR_LOCK_VIOLATION) return false;
  throw_last_error("LockFileEx");
}

void foreign_handle::unlock(std::uint64_t offset) {
  OVERLAPPED ov = at_offset(offset);
  if (!::UnlockFileEx(handle_, 0, 1, 0, &ov)) throw_last_error("UnlockFileEx");
}

std::wstring to_wide(const std::string& s) {
  if (s.empty()) return {};
  const int n = ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring out(static_cast<std::size_t>(n), L'\0');
  ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), out.data(), n);
  return out;
}

std::string to_narrow(const std::wstring& s) {
  if (s.empty()) return {};
  const int n = ::WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0,
                                      nullptr, nullptr);
  std::string out(static_cast<std::size_t>(n), '\0');
  ::WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), out.data(), n, nullptr,
                        nullptr);
  return out;
}

std::wstring quote(const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) return arg;
  std::wstring out = L"\"";
  for (auto it = arg.begin();; ++it) {
    std::size_t backslashes = 0;
    while (it != arg.end() && *it == L'\\') {
      ++it;
      ++backslashes;
    }
    if (it == arg.end()) {
      out.append(backslashes * 2, L'\\');
      break;
    }
    out.append(*it == L'"' ? backslashes * 2 + 1 : backslashes, L'\\');
    out.push_back(*it);
  }
  out.push_back(L'"');
  return out;
}

}  // namespace fasteners_test
