// What the fasteners tool needs of Windows: arguments from the UTF-16 command line, gmtime_s.
#include "system.hpp"

#include <windows.h>
// After windows.h, which it needs.
#include <shellapi.h>

#include "windows/unicode.hpp"

namespace fasteners::tool {

std::vector<std::string> arguments(int argc, char** argv) {
  // The C runtime's argv is in the ANSI code page, which cannot spell every file name.
  int count = 0;
  wchar_t** const wide = ::CommandLineToArgvW(::GetCommandLineW(), &count);
  if (wide == nullptr) return std::vector<std::string>(argv + 1, argv + argc);
  std::vector<std::string> out;
  for (int i = 1; i < count; ++i) out.push_back(narrow(wide[i]));
  ::LocalFree(wide);
  return out;
}

std::string system_name() { return "Windows"; }

bool utc_time(std::time_t t, std::tm& out) { return ::gmtime_s(&out, &t) == 0; }

}  // namespace fasteners::tool
