// fasteners::interprocess_semaphore: at most N holders at once, among processes and threads.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>

#include "fasteners/detail/export.hpp"
#include "fasteners/detail/semaphore_core.hpp"
#include "fasteners/holders.hpp"
#include "fasteners/lock_options.hpp"

namespace fasteners {

// A counting semaphore on a semaphore file: at most `slots` slots are held at once among all
// objects on that file, in this process (any thread) and in every other process. Each slot is a
// byte-range lock in the file, so the OS frees the slots of a process that dies. One object may
// hold several slots: each acquire takes one more, and release() gives one back, from any thread.
// Waiters are served roughly in arrival order, and wait in the kernel without polling. Movable,
// not copyable; destruction releases what the object holds and never throws. Thread-safe.
//
// The file records N: the first user writes it; an object whose N differs fails at its acquire.
// A semaphore file is not a lock file: its slots lie far beyond the bytes that lock files use,
// but whole-file lockers (python-fasteners, flock(1)) on it would still keep everyone out. It is
// created on first acquire (with its missing parent directories), never truncated or deleted, and
// held open from the first acquire until the object is destroyed. It must not be deleted or
// replaced while in use, or users of the old and the new file would not exclude each other.
//
// Members (detail::semaphore_core): acquire, try_acquire, try_acquire_for, try_acquire_until,
// release, held, slots. Acquires throw std::system_error naming the path: with invalid_argument
// when the file records another N or is not a semaphore file, permission_denied when it cannot be
// opened for writing, and for other OS failures (EAGAIN when no thread can be started for a wait).
class FASTENERS_API interprocess_semaphore : public detail::semaphore_core {
 public:
  // Does not touch the file system. Throws std::invalid_argument for slots == 0, for an empty
  // path, and for options.remove_on_release (a semaphore file is never deleted). keep_open is
  // what a semaphore always does.
  interprocess_semaphore(std::filesystem::path path, std::size_t slots,
                         const lock_options& options = {});

  const std::filesystem::path& path() const noexcept;
};

// N as the semaphore file at `path` records it; nothing if the file is absent, empty, or not a
// semaphore file. Reads the file; takes no lock. Throws std::system_error naming the path if it
// exists but cannot be read.
FASTENERS_API std::optional<std::size_t> semaphore_slots(const std::filesystem::path& path);

// Which slot of a semaphore file a lock reported by holders() stands for; nothing if it is no
// slot (the lock of the first waiter in line, or a lock of another kind).
FASTENERS_API std::optional<std::size_t> semaphore_slot(const lock_holder& lock) noexcept;

// Whether a lock reported by holders() is the one the first waiter in line holds while it waits
// for a slot of a semaphore file.
FASTENERS_API bool semaphore_waiter(const lock_holder& lock) noexcept;

// Whether a lock reported by holders() is the mark of a process that waits in line behind the
// first waiter (for the turnstile) for a slot of a semaphore file.
FASTENERS_API bool semaphore_in_line(const lock_holder& lock) noexcept;

}  // namespace fasteners
