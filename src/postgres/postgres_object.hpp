// One PostgreSQL lock object: its session, and its place among this process's holders of a key.
//
// Each object talks to the server through a session of its own, one thread at a time. The server
// excludes sessions from each other; this process's threads are excluded in memory, as the file
// locks' inode_state does it: the server would count a second acquire through one session as
// granted, and would wait for ever where a thread blocks on a name it holds through another
// object. So, per key in use here (see key_state in postgres_object.cpp):
//   - a thread that holds the key through any object and would wait for it again throws
//     resource_deadlock_would_occur;
//   - while a thread of this process waits for the write lock, new readers of this process wait
//     behind it (across processes the server's lock queue does the same);
//   - an object waits in the server only while it holds nothing there: further reading threads of
//     the object share its read lock, after asking the server whether a writer waits anywhere (if
//     one does, they stop joining until the read lock drops). A session never waits while it
//     holds, so a release never queues behind a wait.
// Lock order: the process-wide registry mutex only; it is never held while talking to the server
// or across any other system call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "deadline.hpp"
#include "fasteners/postgres.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail {

namespace postgres {
class session;
struct key_state;
// Guards every postgres_object and key_state of the process (see the top of this file).
extern mutex registry_mu;
}  // namespace postgres

class postgres_object {
 public:
  // Throws std::invalid_argument for a name with a NUL byte. Does not connect.
  postgres_object(std::string conninfo, std::string name, const postgres_options& options);
  // Releases whatever the object holds (and ends its session); never throws.
  ~postgres_object();
  postgres_object(const postgres_object&) = delete;
  postgres_object& operator=(const postgres_object&) = delete;

  // Takes a lock of `mode` by `until` (try_once: one try, no_deadline: no limit); see
  // postgres_lock::acquire for what it throws.
  bool acquire(lock_mode mode, deadline until);
  // Releases one lock of `mode`, preferring one the calling thread took.
  void release(lock_mode mode);
  bool holds(lock_mode mode) noexcept;
  bool session_alive() noexcept;
  std::intptr_t native_handle() noexcept;
  const std::string& name() const noexcept { return name_; }
  std::int64_t key() const noexcept { return key_; }

  // After fork(), in the child, with the registry mutex held by the forking thread: the object
  // holds nothing and its session is the parent's. Async-signal-safe apart from freeing memory.
  void forget_after_fork() noexcept;

 private:
  enum class use { idle, brief, waiting };

  bool holds_any() const FASTENERS_REQUIRES(postgres::registry_mu) {
    return exclusive_held_ || shared_held_ > 0;
  }
  // Waits for a change by `until`; false once it has passed.
  bool sleep(deadline until) FASTENERS_REQUIRES(postgres::registry_mu);
  void connect() FASTENERS_REQUIRES(postgres::registry_mu);
  // Ends the object's part in its session: its holds become lost ones (see lost_shared_), and the
  // session is handed to the caller to be closed outside the mutex.
  std::unique_ptr<postgres::session> drop_session() FASTENERS_REQUIRES(postgres::registry_mu);
  void record(lock_mode mode) FASTENERS_REQUIRES(postgres::registry_mu);
  void forget_holding(lock_mode mode) FASTENERS_REQUIRES(postgres::registry_mu);
  void unbind() FASTENERS_REQUIRES(postgres::registry_mu);
  // Runs `call(session)` with the session to the calling thread alone (marked `how`) and the
  // registry mutex let go meanwhile; afterwards ends the writer count `*counted_writer`, if given.
  // If the call throws and the session is lost, the session moves to `doomed` (to be closed after
  // the mutex), and the exception goes on.
  template <class Call>
  bool use_session(use how, Call call, std::unique_ptr<postgres::session>& doomed,
                   bool* counted_writer = nullptr) FASTENERS_REQUIRES(postgres::registry_mu);
  // Ends a writer's count in state_->writers_waiting, if `counted_writer`.
  void stop_counting(bool& counted_writer) FASTENERS_REQUIRES(postgres::registry_mu);

  const std::string conninfo_;
  const std::string name_;
  const std::int64_t key_;
  const postgres_options options_;

  std::unique_ptr<postgres::session> session_ FASTENERS_GUARDED_BY(postgres::registry_mu);
  // This key's state in the process, once the session says which server and database it is on.
  postgres::key_state* state_ FASTENERS_GUARDED_BY(postgres::registry_mu) = nullptr;
  // Whether a thread is using the session, and how long it may take.
  use use_ FASTENERS_GUARDED_BY(postgres::registry_mu) = use::idle;
  // What the session holds for this object: the write lock, or one read lock that shared_held_
  // reading threads share.
  bool exclusive_held_ FASTENERS_GUARDED_BY(postgres::registry_mu) = false;
  int shared_held_ FASTENERS_GUARDED_BY(postgres::registry_mu) = 0;
  // A writer waits for the key elsewhere: threads stop joining the read lock, so that it drops.
  // Reset when it does.
  bool gate_closed_ FASTENERS_GUARDED_BY(postgres::registry_mu) = false;
  // Holds that ended with a lost session and were not released yet: their release() says so.
  int lost_exclusive_ FASTENERS_GUARDED_BY(postgres::registry_mu) = 0;
  int lost_shared_ FASTENERS_GUARDED_BY(postgres::registry_mu) = 0;
};

}  // namespace fasteners::detail
