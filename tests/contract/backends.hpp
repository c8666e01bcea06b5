// The backends of the contract suite (backend_contract_test.cpp) and its fixture over them.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/test_support.hpp"
#ifdef FASTENERS_CONTRACT_POSTGRES
#include "fasteners/postgres.hpp"
#include "postgres/pg_test_support.hpp"
#endif

namespace fasteners_test {

// A backend is a place where locks live, named by the string where() (a helper process gets it as
// an argument and makes the same place), and in it the addresses of locks, fresh for each test:
//   name, lock_type, rw_type, kind_lock: its name for helpers and tests, and its lock types;
//   for_test(scratch): the place of a test whose temp directory is `scratch`;
//   address(suffix): an address no other test uses; lock(a), rw(a), make(kind, a): lock objects;
//   taken_for_outsider(kind, a), free_for_outsider(kind, a): whether a client of another process
//   finds a lock of that kind taken, or gets it, with one try;
//   wait_for_waiting_writer(a): whether a writer is seen waiting within k_long;
//   shows_nothing(a): nothing holds the address and nothing waits for it;
//   sees_sessions: whether the backend counts holders and waiters (holders(a), wait_for_waiters(a,
//   n)), as a server does.

// Lock files in a directory.
class file_backend {
 public:
  static constexpr const char* name = "file";
  static constexpr bool sees_sessions = false;
  using lock_type = fasteners::interprocess_lock;
  using rw_type = fasteners::interprocess_reader_writer_lock;
  using kind_lock = fasteners_test::kind_lock;

  explicit file_backend(const std::string& where) : dir_(path_of(where)) {}
  static file_backend for_test(const std::filesystem::path& scratch) {
    return file_backend(arg_of(scratch));
  }
  std::string where() const { return arg_of(dir_); }
  // Every test has a directory of its own: the suffix is a fresh file name there.
  std::string address(const std::string& suffix) const { return suffix; }

  lock_type lock(const std::string& a) const { return lock_type(path(a)); }
  rw_type rw(const std::string& a) const { return rw_type(path(a)); }
  kind_lock make(kind k, const std::string& a) const { return kind_lock(k, path(a)); }

  bool taken_for_outsider(kind k, const std::string& a) const {
    return try_in_child(k, path(a)) == k_busy;
  }
  bool free_for_outsider(kind k, const std::string& a) const {
    return try_in_child(k, path(a)) == k_acquired;
  }
  bool wait_for_waiting_writer(const std::string& a) const {
    return fasteners_test::wait_for_waiting_writer(path(a));
  }
  // A waiting writer would hold back readers, a holder anyone.
  bool shows_nothing(const std::string& a) const {
    return free_for_outsider(kind::write, a) && free_for_outsider(kind::read, a);
  }

 private:
  std::filesystem::path path(const std::string& a) const { return dir_ / path_of(a); }
  std::filesystem::path dir_;
};

#ifdef FASTENERS_CONTRACT_POSTGRES
// Names on the PostgreSQL test server (the CTest fixture's); the outsider is a session of its own.
class postgres_backend {
 public:
  static constexpr const char* name = "postgres";
  static constexpr bool sees_sessions = true;
  using lock_type = fasteners::postgres_lock;
  using rw_type = fasteners::postgres_reader_writer_lock;
  using kind_lock = basic_kind_lock<lock_type, rw_type>;

  explicit postgres_backend(const std::string& where) : conninfo_(where) {}
  static postgres_backend for_test(const std::filesystem::path&) {
    return postgres_backend(fasteners::test::pg::conninfo());
  }
  std::string where() const { return conninfo_; }
  std::string address(const std::string& suffix) const {
    return fasteners::test::pg::unique_name(suffix);
  }

  lock_type lock(const std::string& a) const { return lock_type(conninfo_, a); }
  rw_type rw(const std::string& a) const { return rw_type(conninfo_, a); }
  kind_lock make(kind k, const std::string& a) const { return kind_lock(k, conninfo_, a); }

  bool taken_for_outsider(kind k, const std::string& a) const { return !free_for_outsider(k, a); }
  bool free_for_outsider(kind k, const std::string& a) const {
    return fasteners::test::pg::server_try(key(a), k == kind::read);
  }
  bool wait_for_waiting_writer(const std::string& a) const { return wait_for_waiters(a, 1); }
  bool shows_nothing(const std::string& a) const {
    return fasteners::test::pg::server_shows_nothing(key(a));
  }
  int holders(const std::string& a) const { return fasteners::test::pg::advisory_locks_on(key(a)); }
  bool wait_for_waiters(const std::string& a, int n) const {
    return fasteners::test::pg::wait_for_advisory_locks(key(a), n, false);
  }

 private:
  static std::int64_t key(const std::string& a) { return fasteners::postgres_key(a); }
  std::string conninfo_;
};
using contract_backends = ::testing::Types<postgres_backend>;
#else
using contract_backends = ::testing::Types<file_backend>;
#endif

// The name of the contract helper `what` (backend_contract_test.cpp) for `Backend`.
template <class Backend>
std::string contract_helper(const std::string& what) {
  return "contract_" + what + "." + Backend::name;
}

// A test of the contract suite: a temp directory, the backend's place, and other processes of
// this program acting as clients of the backend (the helpers take WHERE KIND ADDRESS first).
template <class Backend>
class backend_test : public ::testing::Test {
 public:
  using backend_type = Backend;

  backend_test() : backend_(Backend::for_test(scratch_.path())) {}
  const Backend& backend() const { return backend_; }
  const std::filesystem::path& scratch() const { return scratch_.path(); }
  std::string address(const std::string& suffix = "lock") const { return backend_.address(suffix); }

  // Starts helper `what` on a lock of kind `k` at `a`.
  child_process start(const std::string& what, kind k, const std::string& a,
                      const std::vector<std::string>& more = {}) const {
    std::vector<std::string> args = {backend_.where(), to_string(k), a};
    args.insert(args.end(), more.begin(), more.end());
    return spawn_helper(contract_helper<Backend>(what), args);
  }
  // A process that waits for the lock and prints "held" once it has it, until its stdin ends.
  child_process wait_elsewhere(kind k, const std::string& a) const { return start("hold", k, a); }
  // The same, once it holds the lock (a test failure if it does not report it within k_long).
  child_process hold_elsewhere(kind k, const std::string& a) const {
    child_process child = wait_elsewhere(k, a);
    EXPECT_EQ(child.read_line(), std::optional<std::string>("held"))
        << "the helper did not report holding a " << to_string(k) << " lock on " << a;
    return child;
  }
  // One try by another process: k_acquired or k_busy.
  int try_elsewhere(kind k, const std::string& a) const { return start("try", k, a).finish(); }

  // What the backend's server shows, where it shows it: `n` sessions hold `a`; `n` wait for it
  // (within k_long).
  void expect_holders(const std::string& a, int n) const {
    if constexpr (Backend::sees_sessions) {
      EXPECT_EQ(backend_.holders(a), n) << "sessions holding " << a;
    }
  }
  void expect_waiters(const std::string& a, int n) const {
    if constexpr (Backend::sees_sessions) {
      EXPECT_TRUE(backend_.wait_for_waiters(a, n)) << "not " << n << " sessions waiting for " << a;
    }
  }

 private:
  temp_dir scratch_;
  Backend backend_;
};

}  // namespace fasteners_test
