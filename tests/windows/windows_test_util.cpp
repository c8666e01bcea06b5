// Helpers of the Windows tests, and main(), which also runs the helper processes the tests start.
#include "windows_test_util.hpp"

#include <shellapi.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>

namespace fasteners_windows_test {
namespace {

namespace fs = std::filesystem;

constexpr std::wstring_view helper_switch = L"--fasteners-windows-helper";

[[noreturn]] void throw_last_error(const char* what) {
  throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), what);
}

std::wstring unique_suffix() {
  static std::atomic<unsigned> counter{0};
  return std::to_wstring(::GetCurrentProcessId()) + L"-" + std::to_wstring(::GetTickCount64()) +
         L"-" + std::to_wstring(counter++);
}

// This test program's path.
std::wstring this_program() {
  std::wstring self(MAX_PATH, L'\0');
  for (;;) {
    const DWORD n = ::GetModuleFileNameW(nullptr, self.data(), static_cast<DWORD>(self.size()));
    if (n == 0) throw_last_error("GetModuleFileNameW");
    if (n < self.size()) {
      self.resize(n);
      return self;
    }
    self.resize(self.size() * 2);
  }
}

}  // namespace

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

namespace {

// This process's environment with `extra` ("NAME=value") added or replacing same-named entries,
// as a CreateProcessW environment block.
std::wstring environment_block(const std::vector<std::wstring>& extra) {
  auto name_of = [](std::wstring_view entry) {
    return std::wstring(entry.substr(0, entry.find(L'=', 1)));
  };
  std::wstring block;
  wchar_t* const strings = ::GetEnvironmentStringsW();
  for (const wchar_t* p = strings; *p != L'\0';) {
    const std::wstring_view entry(p);
    bool replaced = false;
    for (const auto& e : extra)
      replaced = replaced || _wcsicmp(name_of(e).c_str(), name_of(entry).c_str()) == 0;
    if (!replaced) block.append(entry).push_back(L'\0');
    p += entry.size() + 1;
  }
  ::FreeEnvironmentStringsW(strings);
  for (const auto& e : extra) block.append(e).push_back(L'\0');
  block.push_back(L'\0');
  return block;
}

std::map<std::string, helper_function>& helpers() {
  static std::map<std::string, helper_function> registry;
  return registry;
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

std::size_t handle_count_from_system_table() {
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
    std::size_t count = 0;
    for (ULONG_PTR i = 0; i < info->count; ++i) {
      if (info->handles[i].process_id == ::GetCurrentProcessId()) ++count;
    }
    return count;
  }
}

}  // namespace

bool running_on_wine() {
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

}  // namespace fasteners_windows_test

namespace fasteners_test {

temp_dir::temp_dir() {
  wchar_t buffer[MAX_PATH + 1];
  const DWORD n = ::GetTempPathW(MAX_PATH + 1, buffer);
  if (n == 0 || n > MAX_PATH) fasteners_windows_test::throw_last_error("GetTempPathW");
  path_ = std::filesystem::path(buffer) /
          (L"fasteners-windows-test-" + fasteners_windows_test::unique_suffix());
  std::filesystem::create_directories(path_);
}

temp_dir::~temp_dir() {
  // A helper that was just terminated may still be closing its handles: retry for a while.
  for (int attempt = 0; attempt < 50; ++attempt) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (!ec) return;
    ::Sleep(100);
  }
}

}  // namespace fasteners_test

namespace fasteners_windows_test {

named_event::named_event() : name_(L"Local\\fasteners-windows-test-" + unique_suffix()) {
  handle_ = ::CreateEventW(nullptr, TRUE, FALSE, name_.c_str());
  if (handle_ == nullptr) throw_last_error("CreateEventW");
}

named_event::~named_event() { ::CloseHandle(handle_); }

void named_event::set() {
  if (!::SetEvent(handle_)) throw_last_error("SetEvent");
}

bool named_event::wait(std::chrono::milliseconds timeout) const {
  return ::WaitForSingleObject(handle_, static_cast<DWORD>(timeout.count())) == WAIT_OBJECT_0;
}

child_process::child_process(const std::string& helper, const std::vector<std::wstring>& args,
                             const std::vector<std::wstring>& environment, bool inherit_handles) {
  const std::wstring self = this_program();
  std::wstring command = quote(self) + L" " + std::wstring(helper_switch) + L" " + to_wide(helper);
  for (const auto& arg : args) command += L" " + quote(arg);
  std::wstring block = environment.empty() ? std::wstring() : environment_block(environment);
  STARTUPINFOW startup{};
  startup.cb = sizeof startup;
  PROCESS_INFORMATION info{};
  if (!::CreateProcessW(self.c_str(), command.data(), nullptr, nullptr,
                        inherit_handles ? TRUE : FALSE, CREATE_UNICODE_ENVIRONMENT,
                        block.empty() ? nullptr : block.data(), nullptr, &startup, &info)) {
    throw_last_error("CreateProcessW");
  }
  ::CloseHandle(info.hThread);
  process_ = info.hProcess;
}

child_process::~child_process() {
  if (running()) terminate();
  ::CloseHandle(process_);
}

bool child_process::running() const { return ::WaitForSingleObject(process_, 0) == WAIT_TIMEOUT; }

void child_process::terminate() {
  ::TerminateProcess(process_, 137);
  ::WaitForSingleObject(process_, INFINITE);
}

int child_process::wait(std::chrono::milliseconds timeout) {
  if (::WaitForSingleObject(process_, static_cast<DWORD>(timeout.count())) != WAIT_OBJECT_0) {
    terminate();
    return -1;
  }
  DWORD code = 0;
  ::GetExitCodeProcess(process_, &code);
  return static_cast<int>(code);
}

std::vector<std::wstring> helper_command(const std::string& helper,
                                         const std::vector<std::wstring>& args) {
  std::vector<std::wstring> command{this_program(), std::wstring(helper_switch), to_wide(helper)};
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

int run_helper(const std::string& helper, const std::vector<std::wstring>& args,
               const std::vector<std::wstring>& environment) {
  child_process child(helper, args, environment);
  return child.wait();
}

int try_in_child(kind k, const fs::path& path) {
  return run_helper("attempt", {to_wide(to_string(k)), path.native()});
}

held_in_child::held_in_child(kind k, const fs::path& path)
    : child_("hold", {to_wide(to_string(k)), path.native(), ready_.name(), release_.name()}) {}

int held_in_child::release() {
  release_.set();
  return child_.wait();
}

bool register_helper(const char* name, helper_function f) {
  helpers()[name] = f;
  return true;
}

std::optional<int> run_helper_if_asked() {
  int argc = 0;
  wchar_t** argv = ::CommandLineToArgvW(::GetCommandLineW(), &argc);
  if (argv == nullptr) return std::nullopt;
  std::vector<std::wstring> args(argv, argv + argc);
  ::LocalFree(argv);
  if (args.size() < 3 || args[1] != helper_switch) return std::nullopt;
  const auto it = helpers().find(to_narrow(args[2]));
  if (it == helpers().end()) return fail("no helper named " + to_narrow(args[2]));
  try {
    return it->second(std::vector<std::wstring>(args.begin() + 3, args.end()));
  } catch (const std::exception& e) {
    return fail(std::string("helper ") + it->first + " threw: " + e.what());
  }
}

int fail(const std::string& message) {
  std::fprintf(stderr, "helper: %s\n", message.c_str());
  std::fflush(stderr);
  return k_error;
}

HANDLE open_event(const std::wstring& name) {
  const HANDLE event = ::OpenEventW(EVENT_MODIFY_STATE | SYNCHRONIZE, FALSE, name.c_str());
  if (event == nullptr) throw_last_error("OpenEventW");
  return event;
}

std::size_t handle_count() {
  DWORD count = 0;
  if (::GetProcessHandleCount(::GetCurrentProcess(), &count) && count > 0) return count;
  return handle_count_from_system_table();
}

std::pair<std::uint64_t, std::uint64_t> identity_of(HANDLE handle) {
  BY_HANDLE_FILE_INFORMATION info{};
  if (!::GetFileInformationByHandle(handle, &info)) throw_last_error("GetFileInformationByHandle");
  return {info.dwVolumeSerialNumber,
          (std::uint64_t{info.nFileIndexHigh} << 32) | info.nFileIndexLow};
}

std::pair<std::uint64_t, std::uint64_t> identity_of(const fs::path& path) {
  const HANDLE handle = ::CreateFileW(path.c_str(), FILE_READ_ATTRIBUTES,
                                      FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                                      nullptr, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, nullptr);
  if (handle == INVALID_HANDLE_VALUE) throw_last_error("CreateFileW");
  const auto id = identity_of(handle);
  ::CloseHandle(handle);
  return id;
}

foreign_handle::foreign_handle(const fs::path& path)
    : handle_(::CreateFileW(path.c_str(), GENERIC_READ | GENERIC_WRITE,
                            FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr, OPEN_ALWAYS,
                            FILE_ATTRIBUTE_NORMAL, nullptr)) {
  if (handle_ == INVALID_HANDLE_VALUE) throw_last_error("CreateFileW");
}

foreign_handle::~foreign_handle() { ::CloseHandle(handle_); }

bool foreign_handle::try_lock(bool exclusive, std::uint64_t offset) {
  OVERLAPPED ov{};
  ov.Offset = static_cast<DWORD>(offset & 0xffffffffu);
  ov.OffsetHigh = static_cast<DWORD>(offset >> 32);
  const DWORD flags = LOCKFILE_FAIL_IMMEDIATELY | (exclusive ? LOCKFILE_EXCLUSIVE_LOCK : 0);
  if (::LockFileEx(handle_, flags, 0, 1, 0, &ov)) return true;
  if (::GetLastError() == ERROR_LOCK_VIOLATION) return false;
  throw_last_error("LockFileEx");
}

void foreign_handle::unlock(std::uint64_t offset) {
  OVERLAPPED ov{};
  ov.Offset = static_cast<DWORD>(offset & 0xffffffffu);
  ov.OffsetHigh = static_cast<DWORD>(offset >> 32);
  if (!::UnlockFileEx(handle_, 0, 1, 0, &ov)) throw_last_error("UnlockFileEx");
}

void write_counter(const fs::path& path, long value) {
  const HANDLE file = ::CreateFileW(path.c_str(), GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                                    nullptr, OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) throw_last_error("CreateFileW");
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%20ld", value);
  DWORD written = 0;
  const BOOL ok = ::WriteFile(file, text, static_cast<DWORD>(n), &written, nullptr);
  ::CloseHandle(file);
  if (!ok || written != static_cast<DWORD>(n)) throw_last_error("WriteFile");
}

long read_counter(const fs::path& path) {
  const HANDLE file = ::CreateFileW(path.c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE,
                                    nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) throw_last_error("CreateFileW");
  char text[32] = {};
  DWORD read = 0;
  const BOOL ok = ::ReadFile(file, text, sizeof text - 1, &read, nullptr);
  ::CloseHandle(file);
  if (!ok) throw_last_error("ReadFile");
  return std::strtol(text, nullptr, 10);
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

// The helpers that several tests use.

FASTENERS_WINDOWS_HELPER(attempt) {
  kind_lock lock(parse_kind(to_narrow(args.at(0))), args.at(1));
  if (!lock.acquire(false)) return k_busy;
  lock.release();
  return k_acquired;
}

FASTENERS_WINDOWS_HELPER(hold) {
  kind_lock lock(parse_kind(to_narrow(args.at(0))), args.at(1));
  const HANDLE ready = open_event(args.at(2));
  const HANDLE release = open_event(args.at(3));
  lock.acquire();
  ::SetEvent(ready);
  if (::WaitForSingleObject(release, 120000) != WAIT_OBJECT_0) return fail("never released");
  lock.release();
  return 0;
}

}  // namespace fasteners_windows_test

int main(int argc, char** argv) {
  if (const auto code = fasteners_windows_test::run_helper_if_asked()) return *code;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
