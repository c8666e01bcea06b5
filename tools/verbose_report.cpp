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

// Joins at most a few descriptions: "a, b and 3 more".
std::string list(const std::vector<std::string>& items) {
  constexpr std::size_t most = 5;
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < most; ++i) {
    out += i == 0 ? "" : ", ";
    out += items[i];
  }
  if (items.size() > most) out += " and " + std::to_string(items.size() - most) + " more";
  return out;
}

}  // namespace

std::string describe_waits(const std::vector<std::string>& holding, bool exclusive,
                           const std::vector<std::string>& waiting, bool writers_wait,
                           const std::string& nobody) {
  std::string out;
  if (!holding.empty()) out = (exclusive ? "held exclusive by " : "held by ") + list(holding);
  if (!waiting.empty()) {
    out += out.empty() ? "" : "; ";
    out +=
        (writers_wait ? "a writer waits for it first: " : "waiting for it first: ") + list(waiting);
  }
  return out.empty() ? nobody : out;
}

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
  std::printf("%s: getting %s took %lld.%06lld seconds\n", name_.c_str(), taken_.c_str(),
              us / 1000000, us % 1000000);
}

void verbose_report::not_taken(bool one_try) const {
  if (!verbose_) return;
  std::cerr << name_ << (one_try ? ": failed to get " : ": timeout while waiting to get ") << taken_
            << std::endl;
}

void verbose_report::executing(const std::string& program) const {
  if (!verbose_) return;
  std::printf("%s: executing %s\n", name_.c_str(), program.c_str());
}

}  // namespace fasteners::tool
