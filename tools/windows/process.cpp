// Running the command of `fasteners run` on Windows: CreateProcessW with one UTF-16 command line.
#include "process.hpp"

#include <windows.h>

#include <system_error>
#include <utility>

#include "windows/unicode.hpp"

namespace fasteners::tool {
namespace {

std::system_error windows_error(DWORD error, const std::string& what) {
  return std::system_error(std::error_code(static_cast<int>(error), std::system_category()),
                           "fasteners: " + what);
}

// Appends `arg` so that CommandLineToArgvW and the C runtime read it back unchanged: as it is if
// it has no blank or double quote, else in double quotes, with each double quote escaped by a
// backslash and the backslashes before a double quote (or the closing one) doubled.
void append_argument(std::wstring& line, const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) {
    line += arg;
    return;
  }
  line += L'"';
  std::size_t backslashes = 0;
  for (const wchar_t c : arg) {
    if (c == L'\\') {
      ++backslashes;
      continue;
    }
    line.append(c == L'"' ? backslashes * 2 + 1 : backslashes, L'\\');
    backslashes = 0;
    line += c;
  }
  line.append(backslashes * 2, L'\\');
  line += L'"';
}

// The program's name opens the command line. CreateProcessW (and the C runtime, for argv[0])
// read it up to the first blank, or between double quotes, without escapes.
std::wstring program_word(const std::string& program) {
  const std::wstring name = widen(program);
  if (name.find(L'"') != std::wstring::npos) {
    throw windows_error(ERROR_INVALID_NAME, "failed to execute '" + program + "'");
  }
  if (!name.empty() && name.find_first_of(L" \t") == std::wstring::npos) return name;
  return L"\"" + name + L"\"";
}

std::wstring command_line_of(const command_line& command) {
  const auto& argv = command.argv;
  std::wstring line = program_word(argv.at(0));
  for (std::size_t i = 1; i < argv.size(); ++i) {
    line += L' ';
    if (command.raw_last_argument && i + 1 == argv.size()) {
      line += L'"' + widen(argv[i]) + L'"';  // cmd.exe /s /c drops the outer quotes.
    } else {
      append_argument(line, widen(argv[i]));
    }
  }
  return line;
}

// An inheritable duplicate of one of this process's standard handles, for the command, closed
// when it goes; the handle as it is when it is none (no console, for example) or cannot be
// duplicated.
class std_handle_for_child {
 public:
  explicit std_handle_for_child(DWORD which) : handle_(::GetStdHandle(which)) {
    HANDLE copy = nullptr;
    if (handle_ != nullptr && handle_ != INVALID_HANDLE_VALUE &&
        ::DuplicateHandle(::GetCurrentProcess(), handle_, ::GetCurrentProcess(), &copy, 0, TRUE,
                          DUPLICATE_SAME_ACCESS)) {
      handle_ = copy;
      owned_ = true;
    }
  }
  ~std_handle_for_child() {
    if (owned_) ::CloseHandle(handle_);
  }
  std_handle_for_child(const std_handle_for_child&) = delete;
  std_handle_for_child& operator=(const std_handle_for_child&) = delete;
  HANDLE get() const noexcept { return handle_; }

 private:
  HANDLE handle_;
  bool owned_ = false;
};

// Ctrl+C and Ctrl+Break go to every process of the console, the command included: it decides
// whether to end, and this process waits for it, holding the lock until it ends.
BOOL WINAPI ignore_interrupts(DWORD event) {
  return event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT ? TRUE : FALSE;
}

}  // namespace

bool command_can_inherit_lock() { return false; }

bool command_can_replace_process() { return false; }

void exec_command(const command_line& command, std::intptr_t) {
  throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                          "fasteners: cannot execute '" + command.argv.at(0) +
                              "' in place of this process: Windows cannot replace a process");
}

command_process start_command(const command_line& command, std::intptr_t) {
  std::wstring line = command_line_of(command);
  // The standard streams are handed down explicitly, so that they reach the command also when
  // they are files or pipes that this process did not get as inheritable handles. The command
  // inherits the handles that are inheritable anyway, as exec keeps descriptors on POSIX; the
  // library's lock handles are not.
  const std_handle_for_child input(STD_INPUT_HANDLE);
  const std_handle_for_child output(STD_OUTPUT_HANDLE);
  const std_handle_for_child error(STD_ERROR_HANDLE);
  STARTUPINFOW startup{};
  startup.cb = sizeof startup;
  startup.dwFlags = STARTF_USESTDHANDLES;
  startup.hStdInput = input.get();
  startup.hStdOutput = output.get();
  startup.hStdError = error.get();
  // The command inherits this process's environment block, which the variables join (this
  // process starts no other command; the C runtime's getenv keeps its own copy).
  for (const auto& [name, value] : command.environment) {
    if (!::SetEnvironmentVariableW(widen(name).c_str(), widen(value).c_str())) {
      throw windows_error(::GetLastError(),
                          "cannot set " + name + " for '" + command.argv.at(0) + "'");
    }
  }
  PROCESS_INFORMATION info{};
  if (!::CreateProcessW(nullptr, line.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr, &startup,
                        &info)) {
    throw windows_error(::GetLastError(), "failed to execute '" + command.argv.at(0) + "'");
  }
  ::CloseHandle(info.hThread);
  return reinterpret_cast<command_process>(info.hProcess);
}

void await_command_end(command_process process) {
  const HANDLE handle = reinterpret_cast<HANDLE>(process);
  ::SetConsoleCtrlHandler(&ignore_interrupts, TRUE);
  if (::WaitForSingleObject(handle, INFINITE) != WAIT_OBJECT_0) {
    throw windows_error(::GetLastError(), "cannot wait for the command");
  }
}

void terminate_command(command_process process) noexcept {
  ::TerminateProcess(reinterpret_cast<HANDLE>(process), 143);
}

command_status wait_command(command_process process) {
  const HANDLE handle = reinterpret_cast<HANDLE>(process);
  ::SetConsoleCtrlHandler(&ignore_interrupts, TRUE);
  if (::WaitForSingleObject(handle, INFINITE) != WAIT_OBJECT_0) {
    throw windows_error(::GetLastError(), "cannot wait for the command");
  }
  DWORD code = 0;
  const bool known = ::GetExitCodeProcess(handle, &code) != 0;
  const DWORD error = ::GetLastError();
  ::CloseHandle(handle);
  if (!known) throw windows_error(error, "cannot get the exit code of the command");
  // Exit codes are 32-bit; main() returns this int, which Windows reports as the same code.
  return {static_cast<int>(code), 0};
}

command_line shell_command(const std::string& command) {
  std::wstring shell(MAX_PATH, L'\0');
  DWORD n = ::GetEnvironmentVariableW(L"COMSPEC", shell.data(), static_cast<DWORD>(shell.size()));
  if (n >= shell.size()) {
    shell.resize(n);
    n = ::GetEnvironmentVariableW(L"COMSPEC", shell.data(), static_cast<DWORD>(shell.size()));
  }
  shell.resize(n < shell.size() ? n : 0);
  // /d: no AutoRun commands from the registry; /s: cmd.exe strips the quotes around the command
  // and keeps everything in it as written.
  return {{shell.empty() ? "cmd.exe" : narrow(shell), "/d", "/s", "/c", command}, true};
}

struct interrupts_ignored::saved {};
interrupts_ignored::interrupts_ignored() = default;
interrupts_ignored::~interrupts_ignored() = default;
std::vector<int> interrupts_ignored::ignored_here() const { return {}; }

}  // namespace fasteners::tool
