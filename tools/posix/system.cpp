// What the fasteners tool needs of a POSIX system: arguments as given, uname(2), gmtime_r.
#include "system.hpp"

#include <sys/utsname.h>

namespace fasteners::tool {

std::vector<std::string> arguments(int argc, char** argv) {
  return std::vector<std::string>(argv + 1, argv + argc);
}

std::string system_name() {
  struct utsname name {};
  return ::uname(&name) == 0 ? name.sysname : "this system";
}

bool utc_time(std::time_t t, std::tm& out) { return ::gmtime_r(&t, &out) != nullptr; }

}  // namespace fasteners::tool
