// Windows tests of the fasteners command-line tool: the built fasteners.exe, run as a user runs it.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fasteners/version.hpp"
#include "windows/windows_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

// The tool as CMake built it. A cross build names it with a Unix path, which Wine maps to a
// drive.
fs::path tool_path() {
  const std::string built = FASTENERS_CLI_PATH;
  if (!built.empty() && built[0] == '/' && running_on_wine()) {
    using to_dos_function = WCHAR*(CDECL*)(const char*);
    const auto to_dos = reinterpret_cast<to_dos_function>(reinterpret_cast<void (*)()>(
        ::GetProcAddress(::GetModuleHandleW(L"kernel32.dll"), "wine_get_dos_file_name")));
    if (to_dos != nullptr) {
      if (WCHAR* const dos = to_dos(built.c_str())) {
        fs::path path(dos);
        ::HeapFree(::GetProcessHeap(), 0, dos);
        return path;
      }
    }
  }
  return fs::u8path(built);
}

// A handle that the tool inherits as a standard stream.
HANDLE inheritable_file(const fs::path& path, DWORD access, DWORD disposition) {
  SECURITY_ATTRIBUTES inherit{static_cast<DWORD>(sizeof(SECURITY_ATTRIBUTES)), nullptr, TRUE};
  const HANDLE handle =
      ::CreateFileW(path.c_str(), access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                    &inherit, disposition, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (handle == INVALID_HANDLE_VALUE) {
    throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(),
                            "CreateFileW");
  }
  return handle;
}

// The text of a file the tool wrote, without the carriage returns of text mode.
std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  std::string out;
  for (const char c : text.str()) {
    if (c != '\r') out += c;
  }
  return out;
}

struct tool_result {
  int exit_code = -1;
  std::string out;  // Standard output and error, carriage returns removed.
  std::string err;
};

// fasteners.exe started with `args`, its standard output and error going to files in `dir`.
class running_tool {
 public:
  running_tool(const fs::path& dir, const std::vector<std::wstring>& args)
      : out_(dir / ("out-" + std::to_string(++count_))),
        err_(dir / ("err-" + std::to_string(count_))) {
    std::wstring command = quote(tool_path().native());
    for (const auto& arg : args) command += L" " + quote(arg);
    const HANDLE input = inheritable_file(L"NUL", GENERIC_READ, OPEN_EXISTING);
    const HANDLE output = inheritable_file(out_, GENERIC_WRITE, CREATE_ALWAYS);
    const HANDLE error = inheritable_file(err_, GENERIC_WRITE, CREATE_ALWAYS);
    STARTUPINFOW startup{};
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = input;
    startup.hStdOutput = output;
    startup.hStdError = error;
    PROCESS_INFORMATION info{};
    const BOOL started = ::CreateProcessW(nullptr, command.data(), nullptr, nullptr, TRUE, 0,
                                          nullptr, nullptr, &startup, &info);
    const DWORD start_error = ::GetLastError();
    for (const HANDLE h : {input, output, error}) ::CloseHandle(h);
    if (!started) {
      throw std::system_error(static_cast<int>(start_error), std::system_category(),
                              "CreateProcessW " + to_narrow(command));
    }
    ::CloseHandle(info.hThread);
    process_ = info.hProcess;
  }
  ~running_tool() {
    if (::WaitForSingleObject(process_, 0) == WAIT_TIMEOUT) {
      ::TerminateProcess(process_, 137);
      ::WaitForSingleObject(process_, INFINITE);
    }
    ::CloseHandle(process_);
  }
  running_tool(const running_tool&) = delete;
  running_tool& operator=(const running_tool&) = delete;

  bool running() const { return ::WaitForSingleObject(process_, 0) == WAIT_TIMEOUT; }

  // Waits for the tool to end (terminating it after `timeout`, exit code -1).
  tool_result wait(std::chrono::milliseconds timeout = k_long) {
    tool_result result;
    if (::WaitForSingleObject(process_, static_cast<DWORD>(timeout.count())) == WAIT_OBJECT_0) {
      DWORD code = 0;
      ::GetExitCodeProcess(process_, &code);
      result.exit_code = static_cast<int>(code);
    } else {
      ::TerminateProcess(process_, 137);
      ::WaitForSingleObject(process_, INFINITE);
    }
    result.out = read_text(out_);
    result.err = read_text(err_);
    return result;
  }

 private:
  static inline int count_ = 0;
  fs::path out_;
  fs::path err_;
  HANDLE process_ = nullptr;
};

class windows_cli_test : public lock_test {
 protected:
  tool_result run(const std::vector<std::wstring>& args) {
    return running_tool(dir() / "output", args).wait();
  }
  void SetUp() override { fs::create_directories(dir() / "output"); }

  // The tool failed with `code` and one line on stderr that contains `words`.
  static void expect_one_line_error(const tool_result& r, int code,
                                    const std::vector<std::string>& words = {}) {
    EXPECT_EQ(r.exit_code, code) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("fasteners", 0), 0U) << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    for (const auto& word : words) EXPECT_NE(r.err.find(word), std::string::npos) << r.err;
  }
};

TEST_F(windows_cli_test, prints_its_version) {
  for (const wchar_t* flag : {L"--version", L"-V"}) {
    const auto r = run({flag});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, std::string("fasteners ") + fasteners::version_string + "\n");
  }
}

TEST_F(windows_cli_test, help_says_what_differs_on_windows) {
  const auto r = run({L"run", L"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"-o is implied", "%COMSPEC%", "--flock is not available"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
  const auto status = run({L"status", L"--help"});
  EXPECT_NE(status.out.find("69 where holders cannot be listed"), std::string::npos);
  EXPECT_NE(status.out.find("on Windows, which does not tell who holds a lock"), std::string::npos);
}

TEST_F(windows_cli_test, exits_with_the_commands_exit_code_and_releases_the_lock) {
  EXPECT_EQ(run({L"run", lock_path(), L"cmd", L"/c", L"exit 7"}).exit_code, 7);
  EXPECT_EQ(run({L"run", lock_path(), L"--", L"cmd", L"/c", L"exit", L"0"}).exit_code, 0);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(windows_cli_test, holds_the_lock_while_the_command_runs) {
  // The command is a helper that tries the lock itself: fasteners holds it, not the command.
  auto attempt = [&](const std::vector<std::wstring>& options, kind k) {
    std::vector<std::wstring> args{L"run"};
    args.insert(args.end(), options.begin(), options.end());
    args.push_back(lock_path());
    for (const auto& word : helper_command("try", {to_string(k), arg_of(lock_path())}))
      args.push_back(to_wide(word));
    return run(args).exit_code;
  };
  EXPECT_EQ(attempt({}, kind::write), k_busy);
  EXPECT_EQ(attempt({}, kind::read), k_busy);
  EXPECT_EQ(attempt({L"-o"}, kind::lock), k_busy);
  EXPECT_EQ(attempt({L"-s"}, kind::read), k_acquired);
  EXPECT_EQ(attempt({L"-s"}, kind::write), k_busy);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

// The arguments that arguments_reach_the_command_unchanged passes through the tool.
const std::vector<std::wstring> awkward_arguments = {
    L"a b", L"c\"d", L"e\\", L"f\\\\\"g", L"", L"\t", L"\u00fc\u20ac", L"h\\ i\\\\"};

// The awkward arguments in UTF-8, as a helper gets them.
std::vector<std::string> awkward_arguments_utf8() {
  std::vector<std::string> utf8;
  for (const auto& arg : awkward_arguments) utf8.push_back(to_narrow(arg));
  return utf8;
}

FASTENERS_TEST_HELPER(expect_arguments) {
  if (args == awkward_arguments_utf8()) return 0;
  std::string got;
  for (const auto& arg : args) got += "[" + arg + "]";
  return fail(k_error, "unexpected arguments " + got);
}

TEST_F(windows_cli_test, arguments_reach_the_command_unchanged) {
  std::vector<std::wstring> args{L"run", lock_path()};
  for (const auto& word : helper_command("expect_arguments", awkward_arguments_utf8()))
    args.push_back(to_wide(word));
  const auto r = run(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(windows_cli_test, shell_command_runs_with_cmd) {
  for (const auto& args : std::vector<std::vector<std::wstring>>{
           {L"run", lock_path(), L"-c", L"echo hello \"a  b\"& exit 3"},
           {L"run", L"-c", L"echo hello \"a  b\"& exit 3", lock_path()}}) {
    const auto r = run(args);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_EQ(r.out.rfind("hello \"a  b\"", 0), 0U) << r.out;
  }
}

TEST_F(windows_cli_test, non_blocking_conflict_exits_with_the_conflict_code) {
  child_process holder = hold_in_child(kind::write, lock_path());
  const auto command = {L"cmd", L"/c", L"exit 0"};
  auto run_with = [&](std::vector<std::wstring> args) {
    args.push_back(lock_path());
    args.insert(args.end(), command.begin(), command.end());
    return run(args);
  };
  EXPECT_EQ(run_with({L"run", L"-n"}).exit_code, 1);
  EXPECT_EQ(run_with({L"run", L"-n", L"-E", L"75"}).exit_code, 75);
  EXPECT_EQ(run_with({L"run", L"--nonblock", L"-s", L"--conflict-exit-code=0"}).exit_code, 0);
  // As flock(1): one line on stderr, named as the program was invoked.
  const auto verbose = run_with({L"run", L"-n", L"-E", L"75", L"-v"});
  EXPECT_EQ(verbose.exit_code, 75);
  EXPECT_EQ(verbose.err, "fasteners: failed to get lock\n");
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(run_with({L"run", L"-n", L"-E", L"75"}).exit_code, 0);
}

TEST_F(windows_cli_test, shared_locks_share_and_exclude_writers) {
  child_process reader = hold_in_child(kind::read, lock_path());
  EXPECT_EQ(run({L"run", L"-s", L"-n", lock_path(), L"cmd", L"/c", L"exit 5"}).exit_code, 5);
  EXPECT_EQ(run({L"run", L"-n", L"-E", L"9", lock_path(), L"cmd", L"/c", L"exit 5"}).exit_code, 9);
  EXPECT_EQ(reader.finish(), 0);
}

TEST_F(windows_cli_test, timed_wait_gives_up_after_its_timeout) {
  child_process holder = hold_in_child(kind::lock, lock_path());
  const auto start = steady::now();
  const auto r = run({L"run", L"-v", L"-w", L"0.2", lock_path(), L"cmd", L"/c", L"exit 0"});
  const double took = seconds_since(start);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_GE(took, 0.2);
  EXPECT_LT(took, 10.0);
  // Whom it waits for (nobody can tell on Windows), then flock(1)'s line.
  EXPECT_NE(r.err.find("(at most 0.2 seconds): its holders cannot be looked up on Windows"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("fasteners: timeout while waiting to get lock"), std::string::npos) << r.err;
  EXPECT_EQ(holder.finish(), 0);
}

TEST_F(windows_cli_test, blocking_wait_ends_when_the_holder_releases) {
  child_process holder = hold_in_child(kind::write, lock_path());
  running_tool waiter(dir() / "output", {L"run", lock_path(), L"cmd", L"/c", L"exit 4"});
  ::Sleep(static_cast<DWORD>(k_quiet.count()));
  EXPECT_TRUE(waiter.running());
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(waiter.wait().exit_code, 4);
}

TEST_F(windows_cli_test, bad_usage_exits_64_with_one_line) {
  const std::wstring lock = lock_path();
  expect_one_line_error(run({}), 64, {"run or status"});
  expect_one_line_error(run({L"lock"}), 64, {"'lock'"});
  expect_one_line_error(run({L"run"}), 64, {"LOCKFILE"});
  expect_one_line_error(run({L"run", lock}), 64, {"no command"});
  expect_one_line_error(run({L"run", L"--bogus", lock, L"cmd"}), 64);
  // Options start with '-' only: "/x" is a lock file, not an option.
  expect_one_line_error(run({L"run", L"/x"}), 64, {"no command"});
  expect_one_line_error(run({L"run", L"-w", L"abc", lock, L"cmd"}), 64, {"timeout"});
  expect_one_line_error(run({L"run", L"-E", L"256", lock, L"cmd"}), 64, {"exit code"});
  expect_one_line_error(run({L"run", lock, L"-c", L"exit", L"3"}), 64, {"-c"});
  expect_one_line_error(run({L"status"}), 64, {"LOCKFILE"});
  expect_one_line_error(run({L"run", L"--flock", lock, L"cmd", L"/c", L"exit 0"}), 64,
                        {"--flock is not available on Windows"});
  EXPECT_FALSE(fs::exists(lock_path()));
}

TEST_F(windows_cli_test, other_failures_exit_with_flocks_codes) {
  expect_one_line_error(run({L"run", dir() / L"no" / L"lock", L"cmd", L"/c", L"exit 0"}), 66,
                        {"does not exist"});
  expect_one_line_error(run({L"run", dir(), L"cmd", L"/c", L"exit 0"}), 66, {"directory"});
  expect_one_line_error(run({L"run", lock_path(), dir() / L"no-such-program.exe"}), 69,
                        {"no-such-program"});
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(windows_cli_test, status_says_holder_lookup_is_not_available) {
  const auto missing = run({L"status", lock_path()});
  EXPECT_EQ(missing.exit_code, 0);
  EXPECT_NE(missing.out.find("free"), std::string::npos);
  child_process holder = hold_in_child(kind::write, lock_path());
  for (const auto& args : std::vector<std::vector<std::wstring>>{
           {L"status", lock_path()}, {L"status", lock_path(), L"--json"}}) {
    expect_one_line_error(run(args), 69, {"holder lookup is not available on Windows"});
  }
  EXPECT_EQ(holder.finish(), 0);
}

TEST_F(windows_cli_test, lock_files_may_have_any_name) {
  const fs::path lock = dir() / L"l\u00f6ck \u20ac \u4e2d";
  EXPECT_EQ(run({L"run", lock, L"cmd", L"/c", L"exit 0"}).exit_code, 0);
  EXPECT_TRUE(fs::exists(lock));
  child_process holder = hold_in_child(kind::write, lock);
  // While it waits, -v names the file.
  const auto r = run({L"run", L"-w", L"0.1", L"-v", lock, L"cmd", L"/c", L"exit 0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("l\xc3\xb6"
                       "ck \xe2\x82\xac \xe4\xb8\xad"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(holder.finish(), 0);
}

}  // namespace
}  // namespace fasteners_test
