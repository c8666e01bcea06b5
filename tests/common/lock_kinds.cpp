// The three kinds of lock the tests take: names and conflicts.
#include "lock_kinds.hpp"

#include <stdexcept>

namespace fasteners_test {

const char* to_string(kind k) {
  switch (k) {
    case kind::lock:
      return "lock";
    case kind::read:
      return "read";
    case kind::write:
      return "write";
  }
  return "?";
}

void PrintTo(kind k, std::ostream* out) { *out << to_string(k); }

kind parse_kind(const std::string& s) {
  for (const kind k : all_kinds) {
    if (s == to_string(k)) return k;
  }
  throw std::invalid_argument("unknown lock kind " + s);
}

bool conflicts(kind a, kind b) { return !(a == kind::read && b == kind::read); }

std::string pair_name(const ::testing::TestParamInfo<std::tuple<kind, kind>>& info) {
  return std::string(to_string(std::get<0>(info.param))) + "_then_" +
         to_string(std::get<1>(info.param));
}

std::string kind_name(const ::testing::TestParamInfo<kind>& info) { return to_string(info.param); }

std::vector<std::tuple<kind, kind>> all_kind_pairs() {
  std::vector<std::tuple<kind, kind>> pairs;
  for (const kind a : all_kinds) {
    for (const kind b : all_kinds) pairs.emplace_back(a, b);
  }
  return pairs;
}

std::vector<std::tuple<kind, kind>> conflicting_kind_pairs() {
  std::vector<std::tuple<kind, kind>> pairs;
  for (const auto& [a, b] : all_kind_pairs()) {
    if (conflicts(a, b)) pairs.emplace_back(a, b);
  }
  return pairs;
}

}  // namespace fasteners_test
