// What `fasteners run -v` says: flock(1)'s lines where flock(1) writes them, and whom it waits for.
#include "verbose_report.hpp"

#include <cstdio>
#include <iostream>

namespace fasteners::tool {
namespace {

// "0.5", "2": seconds as given, without trailing zeros.
std::string format_seconds(verbose_report::seconds s) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6f", s.count());
  std::string text = buffer;
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

}  // namespace

void verbose_report::waiting(const std::string& what, const std::optional<seconds>& timeout,
                             const std::string& holders) const {
  if (!verbose_) return;
  std::cerr << name_ << ": waiting for " << what
            << (timeout ? " (at most " + format_seconds(*timeout) + " seconds)" : "") << ": "
            << holders << std::endl;
}

void verbose_report::took(seconds took) const {
  if (!verbose_) return;
  // As flock(1): whole microseconds, printf'd to stdout, not flushed.
  const long long us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
  std::printf("%s: getting lock took %lld.%06lld seconds\n", name_.c_str(), us / 1000000,
              us % 1000000);
}

void verbose_report::not_taken(bool one_try) const {
  if (!verbose_) return;
  std::cerr << name_ << (one_try ? ": failed to get lock" : ": timeout while waiting to get lock")
            << std::endl;
}

void verbose_report::executing(const std::string& program) const {
  if (!verbose_) return;
  std::printf("%s: executing %s\n", name_.c_str(), program.c_str());
}

}  // namespace fasteners::tool
