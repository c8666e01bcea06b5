// What the fasteners tool needs of the system besides processes and locks: arguments, text, time.
#pragma once

#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

namespace fasteners::tool {

// The command-line arguments after the program's name, in UTF-8. On Windows they are read from
// the UTF-16 command line (GetCommandLineW), so that any file name can be given; elsewhere they are
// `argv` as it is.
std::vector<std::string> arguments(int argc, char** argv);

// The name this program was invoked by, as glibc's program_invocation_short_name has it: argv[0]
// after its last '/' (on Windows also '\\', and without ".exe"); "fasteners" when there is none.
inline std::string program_name(int argc, char** argv) {
  std::string name = argc > 0 && argv[0] != nullptr ? argv[0] : "";
#if defined(_WIN32)
  name.erase(0, name.find_last_of("/\\") + 1);
  if (name.size() > 4 && (name.compare(name.size() - 4, 4, ".exe") == 0 ||
                          name.compare(name.size() - 4, 4, ".EXE") == 0)) {
    name.resize(name.size() - 4);
  }
#else
  name.erase(0, name.find_last_of('/') + 1);
#endif
  return name.empty() ? "fasteners" : name;
}

// The system's name for messages: "Windows", or uname(2)'s ("Linux", "Darwin").
std::string system_name();

// `t` as UTC calendar time in `out`; returns false if it cannot be represented.
bool utc_time(std::time_t t, std::tm& out);

// The path that the UTF-8 text of an argument names (on POSIX, its bytes as they are).
inline std::filesystem::path path_from_utf8(const std::string& text) {
#if defined(__cpp_char8_t)
  return std::filesystem::path(std::u8string(text.begin(), text.end()));
#else
  return std::filesystem::u8path(text);
#endif
}

// A path as UTF-8 (on POSIX, its bytes as they are), for messages; string() may throw on Windows.
inline std::string utf8_of(const std::filesystem::path& path) {
  const auto text = path.u8string();
  return std::string(text.begin(), text.end());
}

}  // namespace fasteners::tool
