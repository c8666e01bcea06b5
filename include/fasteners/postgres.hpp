// fasteners::postgres_lock, postgres_reader_writer_lock and postgres_semaphore: the same locks
// across machines, on PostgreSQL's session-level advisory locks (CMake target fasteners::postgres,
// linking libpq).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

#include "fasteners/detail/lock_core.hpp"
#include "fasteners/detail/lock_members.hpp"
#include "fasteners/detail/make_locked.hpp"
#include "fasteners/detail/semaphore_core.hpp"
#include "fasteners/timeout.hpp"

namespace fasteners {

// The advisory-lock key of a lock name: the first 8 bytes of the SHA-256 of its bytes (UTF-8),
// read big-endian as a signed 64-bit integer. In SQL, for a name given as text:
//   ('x' || left(encode(sha256(convert_to(NAME, 'UTF8')), 'hex'), 16))::bit(64)::bigint
// Two distinct names share a key with a probability of about n^2 / 2^65 among n names.
FASTENERS_API std::int64_t postgres_key(std::string_view name);

// The advisory-lock keys of postgres_semaphore `name` (see it below), for tools that look at a
// semaphore in pg_locks or take part in it from psql: postgres_key() of the name followed by a
// suffix. None of them is postgres_key(name). The name is used as given (no check that it is one
// a semaphore accepts).
// Slot `slot` (0 to N-1), held exclusively by the session through which a process holds it.
FASTENERS_API std::int64_t postgres_semaphore_slot_key(std::string_view name, std::size_t slot);
// The turnstile, held exclusively by the first waiter in line while it waits for a slot.
FASTENERS_API std::int64_t postgres_semaphore_turnstile_key(std::string_view name);
// The most slots a postgres_semaphore may have.
inline constexpr std::size_t postgres_semaphore_max_slots = 64;
// N = `slots`: held shared by every session through which a process uses the semaphore with N
// slots, for as long as it does; so the one held among those of N = 1 to
// postgres_semaphore_max_slots tells N.
FASTENERS_API std::int64_t postgres_semaphore_slots_key(std::string_view name, std::size_t slots);

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
  // Every exclusive acquisition takes a fencing token (fencing_token()), larger than every one
  // taken before on this name and database, kept in the table fasteners_fence (created at first
  // use where the role may): one more round trip per acquisition.
  bool fencing = false;
  // Called once, on a thread of the library, when the library learns that a lock this object
  // holds is gone (the server closed or lost the session) without the application calling
  // anything: within about a second of the server ending the session (pg_terminate_backend, a
  // restart or a stop), within the keepalive time above when the network fails. `name` is the
  // object's lock name. The object then holds nothing (acquired() is false, and release() throws
  // std::system_error with connection_reset, as for any lost lock). The handler runs with no mutex
  // of the library held: it may call anything on this object or others, destroy other objects and
  // even this one (the destructor then does not wait for the running handler, which must not
  // touch the object afterwards). A destructor called on another thread waits until a running
  // handler of its object returns; none is called after the destructor began. The handler runs
  // beside the application's threads: what it shares with them needs their own synchronization.
  // A handler that throws ends the process. It runs on the thread of the asynchronous acquisitions:
  // a handler that runs long delays their handlers. Empty (the default): nothing is watched.
  // Ignored by postgres_semaphore.
  std::function<void(const std::string& name)> on_lost;
};

namespace detail {

// One lock object on one name: the core of the two PostgreSQL lock types (see lock_core).
class FASTENERS_API postgres_session_lock : public lock_core {
 public:
  // Throws std::invalid_argument if `name` holds a NUL byte. Does not connect.
  postgres_session_lock(std::string conninfo, std::string name, const postgres_options& options);
  // See postgres_lock::session_alive().
  bool session_alive() const noexcept;
  // The name and its key; empty and 0 once moved from.
  const std::string& name() const noexcept;
  std::int64_t key() const noexcept;
};

// What both PostgreSQL lock types add to their members: the name, its key, the session.
template <class Members>
class postgres_members : public Members {
 public:
  // Whether the object's session is still open as far as this process can tell without asking
  // the server: false once the server's end of the session (terminated, restarted, stopped) has
  // reached this machine, from the first call on, or when there is none.
  bool session_alive() const noexcept { return this->core_.session_alive(); }
  const std::string& name() const noexcept { return this->core_.name(); }
  std::int64_t key() const noexcept { return this->core_.key(); }

 protected:
  using Members::Members;
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
// Members (detail::exclusive_lock): acquire, release, acquired, native_handle, and the standard
// TimedLockable ones (lock, try_lock, try_lock_for, try_lock_until, unlock); and name(), key(),
// session_alive(). Timed waits wait in the server's lock queue, not by polling. Besides what the
// members say, acquires throw std::system_error naming host and database (never a password) when
// the server cannot be reached (connection_refused, or timed_out after the connect timeout),
// refuses the login (permission_denied) or the session is lost (connection_reset), and with
// std::errc::protocol_error behind a transaction pooler. Waits across names are not checked for
// deadlocks: each object waits in a session that holds nothing, so the server sees no cycle.
// release() throws std::system_error with std::errc::connection_reset if the session was lost
// while holding (the lock was lost then; the object holds nothing afterwards), and acquired() is
// false once the loss is known. native_handle() is the session's socket while the object holds
// the lock: never use it.
class postgres_lock
    : public detail::postgres_members<detail::exclusive_lock<detail::postgres_session_lock>> {
 public:
  // `conninfo` is a libpq connection string or URI; empty means libpq's defaults (PGHOST, PGPORT,
  // PGDATABASE, ...). Does not connect. Throws std::invalid_argument if `name` holds a NUL byte.
  postgres_lock(std::string conninfo, std::string name, const postgres_options& options = {})
      : postgres_members(
            detail::postgres_session_lock(std::move(conninfo), std::move(name), options)) {}
};

// Holds a read or write lock of a postgres_reader_writer_lock until destroyed.
using postgres_read_guard =
    detail::basic_guard<detail::lock_mode::shared, detail::postgres_session_lock>;
using postgres_write_guard =
    detail::basic_guard<detail::lock_mode::exclusive, detail::postgres_session_lock>;

// A reader-writer lock named `name` in one PostgreSQL database: any number of readers at once, or
// one writer alone, among all lock objects of that name there, in every process on any machine.
// A writer waiting anywhere holds back new readers (the server's lock queue, and in this process
// the library). Sessions, errors and timed waits as for postgres_lock.
//
// Members (detail::reader_writer_lock): acquire_read_lock, acquire_write_lock, release_read_lock,
// release_write_lock, read_lock, write_lock, read_acquired, write_acquired, native_handle, the
// standard SharedTimedLockable ones, and name(), key(), session_alive().
class postgres_reader_writer_lock
    : public detail::postgres_members<detail::reader_writer_lock<detail::postgres_session_lock>> {
 public:
  postgres_reader_writer_lock(std::string conninfo, std::string name,
                              const postgres_options& options = {})
      : postgres_members(
            detail::postgres_session_lock(std::move(conninfo), std::move(name), options)) {}
};

// A counting semaphore named `name` in one PostgreSQL database: at most `slots` slots are held at
// once among all semaphore objects of that name there, in this process (any thread) and in every
// other process on any machine. One object may hold several slots: each acquire takes one more,
// and release() gives one back, from any thread. Each slot is an exclusive advisory lock on a key
// of its own, "NAME:semaphore slot I" (I from 0 to N-1) run through postgres_key(), so the server
// frees the slots of a session that ends (its process died, its machine stayed unreachable past
// the keepalive time), and a psql session that holds such a key holds that slot. Waiters line up
// behind the key of "NAME:semaphore turnstile", so that nobody takes a freed slot back ahead of
// them: they are served roughly in arrival order, and wait in the server without polling. None of
// these keys is the key of postgres_lock(NAME). Movable, not copyable; destruction releases what
// the object holds and never throws. Thread-safe.
//
// Every user must agree on N: each process that uses the semaphore holds a shared lock on the key
// of "NAME:semaphore of N slots" while it does, and one that finds another N's key held there
// fails at its first acquire with std::system_error(std::errc::invalid_argument) naming both
// numbers, as does an object whose N differs from that of another object of this process.
//
// Connections: the objects of one name on one database share, in this process, one session that
// takes slots by a try and holds them; each wait in the server runs on a session of its own (kept
// for reuse while the process uses the semaphore): one while waiting behind others, and one per
// slot (N) for the first waiter in line, plus the one through which it got the turnstile, if it
// waited for it. What a wait is granted stays held through its session. Every object connects
// once at its first acquire.
//
// Members (detail::semaphore_core): acquire, try_acquire, try_acquire_for, try_acquire_until,
// release, held, slots; and name(). Acquires throw std::system_error naming the semaphore, host
// and database as postgres_lock's do; release() throws std::errc::connection_reset if the session
// that held the slot was lost (the slot was lost then, and counts as given back).
class FASTENERS_API postgres_semaphore : public detail::semaphore_core {
 public:
  // `conninfo` as for postgres_lock. Does not connect. Throws std::invalid_argument for slots == 0
  // or above 64, for an empty name and for a name with a NUL byte. options.close_on_release does
  // not apply.
  postgres_semaphore(std::string conninfo, std::string name, std::size_t slots,
                     const postgres_options& options = {});

  // The name; empty once moved from.
  const std::string& name() const noexcept;
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
