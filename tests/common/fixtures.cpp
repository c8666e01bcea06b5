// What the POSIX and Windows test suites share (see fixtures.hpp).
#include "fixtures.hpp"

namespace fasteners_test {

double seconds_since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

}  // namespace fasteners_test
