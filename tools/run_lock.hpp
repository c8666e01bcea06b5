// The one kind of lock that `fasteners run` takes: on a file (this library's locks, or flock(2)'s),
// on a descriptor the shell opened, or on a PostgreSQL name; or with --slots, one slot of a
// semaphore (semaphore_lock.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "errors.hpp"

namespace fasteners::tool {

struct run_options;

// A lock call on a descriptor failed (such as ENOLCK), as opposed to opening the lock file:
// flock(1) tells the two apart in its exit status.
class lock_call_error : public std::system_error {
 public:
  using std::system_error::system_error;
};

// One lock, shared or exclusive, taken at most once. Destroying it releases the lock unless a
// program started with its descriptor still holds it. Not thread-safe.
class run_lock {
 public:
  using seconds = std::chrono::duration<double>;
  virtual ~run_lock() = default;

  // What it locks, for messages: "the exclusive lock on '/tmp/job.lock'".
  virtual std::string what() const = 0;
  // Tries once to take the lock; returns whether it did. Throws std::system_error naming what
  // it locks when that cannot be used (error_for() says how the tool then ends).
  virtual bool try_acquire() = 0;
  // Waits for the lock, at most `timeout` if given (zero: one try); returns whether it took it.
  // Throws as try_acquire().
  virtual bool acquire(std::optional<seconds> timeout) = 0;
  // Whom it waits for, for -v: "held exclusive by pid 1234 (backup.sh)".
  virtual std::string holders() const = 0;
  // The descriptor through which the lock is held, for a command to inherit, so that the lock
  // lasts as long as the command; -1 while not held, and where the lock stays with this process
  // (a PostgreSQL session; Windows).
  virtual std::intptr_t native_handle() const = 0;
  // Lets go of the lock, which this process held while the command ran. Throws std::system_error
  // if it was lost meanwhile.
  virtual void release() = 0;
  // Calls `lost` (on another thread, once) as soon as the lock is known lost while held, or at
  // once if it was lost already; nothing if this lock cannot tell (the default). Replaces the
  // previous call's function; an empty one calls nothing.
  virtual void on_loss(std::function<void()> lost) { static_cast<void>(lost); }
  // The fencing token of the lock held (with --fence): an exclusive lock's own, a shared lock's
  // the latest exclusive lock's (0 if none). Throws std::system_error where there is none: made
  // without fencing, not held, or lost.
  virtual std::uint64_t fencing_token() const {
    throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                            "fasteners: " + what() + " takes no fencing token");
  }
  // Whether on_loss() can tell of a loss.
  virtual bool tells_loss() const { return false; }
  // Whether the lock ends with this process, which then must outlive the command: Ctrl+C
  // (SIGINT, SIGQUIT) does not end it while the command runs, as system(3) does.
  virtual bool ends_with_this_process() const { return false; }
  // What the lines of -v call what is taken: "lock", as flock(1)'s; "a slot" for a semaphore.
  virtual std::string taken() const { return "lock"; }
  // How the tool ends when the lock cannot be used: flock(1)'s exit status and a message that
  // names what failed (never a password).
  virtual tool_error error_for(const std::system_error& e) const;
  // `e`'s message, one line that never holds a password.
  virtual std::string describe(const std::exception& e) const { return e.what(); }
};

// The lock of `fasteners run [OPTIONS] LOCKFILE COMMAND`: this library's, or flock(2)'s with
// --flock, on the file at `path`. The file must be a regular file (or, with --flock, a
// directory); it is created if missing. Throws usage_error where --flock is not available.
std::unique_ptr<run_lock> make_file_lock(const std::filesystem::path& path, const run_options& o);

// The lock of `fasteners run --slots N LOCKFILE COMMAND`: one of the `slots` slots of the
// semaphore file at `path` (fasteners::interprocess_semaphore), held by this process while the
// command runs. Throws tool_error: exit_usage when the file records another number of slots
// (naming both) or `slots` is more than a semaphore has, file_exit_code() when it cannot be read.
std::unique_ptr<run_lock> make_file_semaphore_lock(const std::filesystem::path& path,
                                                   std::size_t slots);

// Whether make_descriptor_lock() works here with these locks: POSIX only, and for fcntl locks
// only where open-file-description locks exist (Linux), since a classic fcntl lock would end with
// this process.
bool descriptor_locks_supported(bool use_flock);

// A lock on the open file of descriptor `fd`, which this process inherited (`fasteners run FD`):
// a flock(2) lock with --flock, else an open-file-description fcntl lock on the whole file,
// which conflicts with this library's locks and python-fasteners' in both directions. Either
// belongs to the open file, so it stays held after this process ends, for as long as a
// descriptor of that open file (the shell's) stays open. The descriptor is never closed. Throws
// tool_error (65, as flock(1)) when `fd` is not open, or when an fcntl lock cannot be taken
// through it: a shared one needs it open for reading, an exclusive one for writing.
std::unique_ptr<run_lock> make_descriptor_lock(int fd, const run_options& o);

// Releases the lock of `fd`'s open file (`fasteners run -u FD`): its flock(2) lock with
// `use_flock`, else its fcntl locks on the whole file. Throws tool_error (65) when `fd` is not
// open, lock_call_error when the unlock fails.
void unlock_descriptor(int fd, bool use_flock);

// The lock of `fasteners run --postgres CONNINFO NAME`: the PostgreSQL advisory lock of NAME in
// that database, held by a session of this process. Throws tool_error where unsupported.
std::unique_ptr<run_lock> make_postgres_lock(const run_options& o);

// The lock of `fasteners run --slots N --postgres CONNINFO NAME`: one of the `slots` slots of the
// PostgreSQL semaphore NAME in that database (fasteners::postgres_semaphore), held by a session of
// this process while the command runs. Throws usage_error for a bad CONNINFO or `slots`,
// tool_error where unsupported.
std::unique_ptr<run_lock> make_postgres_semaphore_lock(const run_options& o, std::size_t slots);

// "held exclusive by pid 1234 (backup.sh)": the processes whose locks on the file at `path` keep
// a lock (`shared`, flock(2)'s with `use_flock`) from it, as fasteners::holders() tells; for -v.
std::string describe_file_holders(const std::filesystem::path& path, bool shared, bool use_flock);

// "the shared lock on NAME" or "the exclusive lock on NAME", for messages.
std::string lock_name(bool shared, const std::string& name);

// flock(1)'s exit status for a failure on a lock file: see file_lock.cpp.
int file_exit_code(const std::system_error& e);

// Whether flock(2) locks exist here: false on Windows.
bool flock_supported();

// A flock(2) lock, as util-linux flock(1) takes it, on a file (created if missing) or a
// directory (platform code; see make_file_lock()).
std::unique_ptr<run_lock> make_flock_lock(const std::filesystem::path& path, bool shared);

// A path that names descriptor `fd`'s file (/proc/self/fd/FD on Linux), for holders(); empty
// where there is none.
std::filesystem::path descriptor_path(int fd);

// "descriptor 9 ('/var/lock/job.lock')", or "descriptor 9" where the file's name is unknown, for
// messages.
std::string descriptor_name(int fd);

}  // namespace fasteners::tool
