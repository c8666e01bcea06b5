// fasteners::postgres_lock and postgres_reader_writer_lock: the same locks across machines, on
// PostgreSQL's session-level advisory locks (CMake target fasteners::postgres, linking libpq).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

#include "fasteners/detail/file_lock.hpp"
#include "fasteners/detail/make_locked.hpp"
#include "fasteners/timeout.hpp"

namespace fasteners {

// The advisory-lock key of a lock name: the first 8 bytes of the SHA-256 of its bytes (UTF-8),
// read big-endian as a signed 64-bit integer. In SQL, for a name given as text:
//   ('x' || left(encode(sha256(convert_to(NAME, 'UTF8')), 'hex'), 16))::bit(64)::bigint
// Two distinct names share a key with a probability of about n^2 / 2^65 among n names.
FASTENERS_API std::int64_t postgres_key(std::string_view name);

// Settings of a PostgreSQL lock object, fixed at construction.
struct postgres_options {
  // Ends the object's database session whenever a release leaves the object holding nothing, so
  // that an idle object keeps no server connection. The next acquire connects again (one more
  // round trip and a login).
  bool close_on_release = false;
  // The longest wait for a connection, in seconds, when the conninfo sets no connect_timeout.
  int connect_timeout = 10;
  // TCP keepalives of the session, when the conninfo sets none: the server closes the session of a
  // client machine that went away (and so frees its locks) within about
  // keepalives_idle + keepalives_interval * keepalives_count seconds; the client notices a lost
  // server within the same time. Zero leaves the system's settings. Unix-domain sockets have none.
  int keepalives_idle = 10;
  int keepalives_interval = 5;
  int keepalives_count = 3;
  // The longest time, in milliseconds, that data sent on the session's TCP connection may wait for
  // an acknowledgement before that side closes the connection: the server's tcp_user_timeout
  // setting and libpq's (unless the conninfo sets one). It covers what keepalives do not, which
  // stop while sent data is unacknowledged: a server that grants the lock to a client cut off by
  // the network frees it that long after the grant, not when TCP's retransmissions give up (about
  // 15 minutes with Linux's defaults). -1: the keepalive time above, in milliseconds (25000 by
  // default), or none when keepalives_idle is 0; 0: the system's (none).
  int tcp_user_timeout = -1;
};

namespace detail {

class postgres_object;  // Defined in src/postgres/; on the heap so moves are cheap.

// One lock object on one name: the shared core of the two PostgreSQL lock types. Thread-safe
// except that moving or destroying it must not race with other calls on it.
class FASTENERS_API postgres_session_lock {
 public:
  postgres_session_lock(std::string conninfo, std::string name, const postgres_options& options);
  ~postgres_session_lock();
  postgres_session_lock(postgres_session_lock&& other) noexcept;
  postgres_session_lock& operator=(postgres_session_lock&& other) noexcept;
  postgres_session_lock(const postgres_session_lock&) = delete;
  postgres_session_lock& operator=(const postgres_session_lock&) = delete;

  bool acquire(lock_mode mode, bool blocking, const timeout_type& timeout);
  bool acquire_until(lock_mode mode, std::chrono::steady_clock::time_point deadline);
  template <class Clock, class Duration>
  bool acquire_until(lock_mode mode, const std::chrono::time_point<Clock, Duration>& t) {
    return acquire_until_on_clock(*this, mode, t);
  }
  void release(lock_mode mode);
  bool holds(lock_mode mode) const noexcept;
  bool session_alive() const noexcept;
  std::intptr_t native_handle() const noexcept;
  const std::string& name() const noexcept;
  std::int64_t key() const noexcept;

 private:
  std::unique_ptr<postgres_object> impl_;
};

}  // namespace detail

// An exclusive lock named `name` in one PostgreSQL database: at most one holder at a time among
// all lock objects of that name on that database, in this process (any thread) and in every other
// process on any machine, psql sessions holding the name's key included. The server releases it
// when the holder's session ends: the process dies, or its machine stays unreachable past the
// keepalive time. The lock belongs to this object, not to a thread. Not reentrant. Movable, not
// copyable; destruction releases and never throws. Thread-safe.
//
// The object opens its own database session at its first acquire and keeps it until destruction
// (see postgres_options::close_on_release). A transaction pooler (PgBouncer in transaction mode)
// cannot carry session locks: the object detects one when it connects, before taking any lock,
// and throws.
//
// Satisfies the standard TimedLockable requirements.
class postgres_lock {
 public:
  // `conninfo` is a libpq connection string or URI; empty means libpq's defaults (PGHOST, PGPORT,
  // PGDATABASE, ...). Does not connect. Throws std::invalid_argument if `name` holds a NUL byte.
  postgres_lock(std::string conninfo, std::string name, const postgres_options& options = {})
      : lock_(std::move(conninfo), std::move(name), options) {}

  // Takes the lock. With `blocking` and no timeout it waits as long as needed; with
  // `blocking == false` it tries once; with a timeout it waits at most that long (in the server's
  // lock queue, not by polling). Returns whether the lock was taken.
  // Throws std::invalid_argument for a negative or NaN timeout; std::system_error naming host and
  // database (never a password) when the server cannot be reached (connection_refused, or
  // timed_out after the connect timeout), refuses the login (permission_denied) or the session is
  // lost (connection_reset); with std::errc::protocol_error behind a transaction pooler; with
  // std::errc::resource_deadlock_would_occur if the calling thread already holds this name in this
  // process (through this object or another) and would wait. Waits across names are not checked
  // for deadlocks: each object waits in a session that holds nothing, so the server sees no cycle.
  bool acquire(bool blocking = true, timeout_type timeout = std::nullopt) {
    return lock_.acquire(detail::lock_mode::exclusive, blocking, timeout);
  }
  // Releases the lock. Throws std::system_error with std::errc::operation_not_permitted if this
  // object does not hold it, and with std::errc::connection_reset if the session was lost while
  // holding (the lock was lost then; the object holds nothing afterwards).
  void release() { lock_.release(detail::lock_mode::exclusive); }
  bool acquired() const noexcept { return lock_.holds(detail::lock_mode::exclusive); }
  // Whether the object's session is still open as far as this process can tell without asking
  // the server: false once the server's end of the session (terminated, restarted, stopped) has
  // reached this machine, from the first call on, or when there is none.
  bool session_alive() const noexcept { return lock_.session_alive(); }
  const std::string& name() const noexcept { return lock_.name(); }
  std::int64_t key() const noexcept { return lock_.key(); }
  // The socket of the session while this object holds the lock; -1 otherwise. Never use it.
  std::intptr_t native_handle() const noexcept { return lock_.native_handle(); }

  void lock() { acquire(true); }
  bool try_lock() { return acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return lock_.acquire_until(detail::lock_mode::exclusive, detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return lock_.acquire_until(detail::lock_mode::exclusive, t);
  }
  void unlock() { release(); }

 private:
  detail::postgres_session_lock lock_;
};

// Holds a read or write lock of a postgres_reader_writer_lock until destroyed.
using postgres_read_guard =
    detail::basic_guard<detail::lock_mode::shared, detail::postgres_session_lock>;
using postgres_write_guard =
    detail::basic_guard<detail::lock_mode::exclusive, detail::postgres_session_lock>;

// A reader-writer lock named `name` in one PostgreSQL database: any number of readers at once, or
// one writer alone, among all lock objects of that name there, in every process on any machine.
// A writer waiting anywhere holds back new readers (the server's lock queue, and in this process
// the library). One object may hold several read locks (one per reading thread). Not reentrant
// and not upgradeable. Sessions, errors and timed waits as for postgres_lock.
//
// Satisfies the standard SharedTimedLockable requirements.
class postgres_reader_writer_lock {
 public:
  postgres_reader_writer_lock(std::string conninfo, std::string name,
                              const postgres_options& options = {})
      : lock_(std::move(conninfo), std::move(name), options) {}

  bool acquire_read_lock(bool blocking = true, timeout_type timeout = std::nullopt) {
    return lock_.acquire(detail::lock_mode::shared, blocking, timeout);
  }
  bool acquire_write_lock(bool blocking = true, timeout_type timeout = std::nullopt) {
    return lock_.acquire(detail::lock_mode::exclusive, blocking, timeout);
  }
  void release_read_lock() { lock_.release(detail::lock_mode::shared); }
  void release_write_lock() { lock_.release(detail::lock_mode::exclusive); }
  postgres_read_guard read_lock() {
    acquire_read_lock();
    return postgres_read_guard(lock_);
  }
  postgres_write_guard write_lock() {
    acquire_write_lock();
    return postgres_write_guard(lock_);
  }
  bool read_acquired() const noexcept { return lock_.holds(detail::lock_mode::shared); }
  bool write_acquired() const noexcept { return lock_.holds(detail::lock_mode::exclusive); }
  bool session_alive() const noexcept { return lock_.session_alive(); }
  const std::string& name() const noexcept { return lock_.name(); }
  std::int64_t key() const noexcept { return lock_.key(); }
  std::intptr_t native_handle() const noexcept { return lock_.native_handle(); }

  void lock() { acquire_write_lock(); }
  bool try_lock() { return acquire_write_lock(false); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return lock_.acquire_until(detail::lock_mode::exclusive, detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return lock_.acquire_until(detail::lock_mode::exclusive, t);
  }
  void unlock() { release_write_lock(); }
  void lock_shared() { acquire_read_lock(); }
  bool try_lock_shared() { return acquire_read_lock(false); }
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& d) {
    return lock_.acquire_until(detail::lock_mode::shared, detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t) {
    return lock_.acquire_until(detail::lock_mode::shared, t);
  }
  void unlock_shared() { release_read_lock(); }

 private:
  detail::postgres_session_lock lock_;
};

// Function wrappers, as interprocess_locked and friends: the returned callable takes the lock
// (waiting as long as needed) around each call of `f`. All copies share one lock object.
template <class F>
auto postgres_locked(std::string conninfo, std::string name, F&& f) {
  return detail::make_locked<std::lock_guard<postgres_lock>>(
      std::make_shared<postgres_lock>(std::move(conninfo), std::move(name)), std::forward<F>(f));
}
template <class F>
auto postgres_read_locked(std::string conninfo, std::string name, F&& f) {
  return detail::make_locked<std::shared_lock<postgres_reader_writer_lock>>(
      std::make_shared<postgres_reader_writer_lock>(std::move(conninfo), std::move(name)),
      std::forward<F>(f));
}
template <class F>
auto postgres_write_locked(std::string conninfo, std::string name, F&& f) {
  return detail::make_locked<std::lock_guard<postgres_reader_writer_lock>>(
      std::make_shared<postgres_reader_writer_lock>(std::move(conninfo), std::move(name)),
      std::forward<F>(f));
}

}  // namespace fasteners
