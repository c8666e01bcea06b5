// The fencing-token checks every backend's POSIX tests share: taking a lock every way, the token
// log that holders in many processes append to, and the checks of what it holds.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {

// Appends "<token>\n" to the log open as `fd` (O_APPEND: one write, one line).
inline bool append_token(int fd, std::uint64_t token) {
  const std::string line = std::to_string(token) + "\n";
  return ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

// Takes `object` exclusively in the way `round` picks: blocking, timed, a try loop, async.
template <class Lock>
void take_exclusively(Lock& object, int round) {
  switch (round % 4) {
    case 0:
      object.lock();
      return;
    case 1:
      while (!object.try_lock_for(std::chrono::seconds(1))) {
      }
      return;
    case 2:
      while (!object.try_lock()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return;
    default: {
      std::promise<std::error_code> granted;
      auto result = granted.get_future();
      object.async_lock([&](std::error_code ec) { granted.set_value(ec); });
      const auto ec = result.get();
      if (ec) throw std::system_error(ec, "async_lock");
      return;
    }
  }
}

// The tokens of the log, in the order they were written.
inline std::vector<std::uint64_t> read_tokens(const std::filesystem::path& log) {
  std::vector<std::uint64_t> tokens;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) tokens.push_back(std::stoull(line));
  return tokens;
}

// Checks that `tokens` strictly increase.
inline void expect_strictly_increasing(const std::vector<std::uint64_t>& tokens) {
  for (std::size_t i = 1; i < tokens.size(); ++i) {
    ASSERT_LT(tokens[i - 1], tokens[i]) << "at line " << i + 1 << " of " << tokens.size();
  }
}

// Calls `f` and checks that it throws std::system_error with operation_not_permitted.
template <class F>
void expect_not_permitted(F f) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted) << e.what();
  }
}

}  // namespace fasteners_test
