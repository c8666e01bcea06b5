// How timed waits end on POSIX systems: the signal the library may use, and how to turn it off.
#pragma once

#include "fasteners/detail/export.hpp"

namespace fasteners {

// Chooses the signal that ends a timed wait (acquire with a timeout, try_lock_for,
// try_lock_until and their shared variants) that blocks in the kernel on POSIX systems. The
// default is SIGRTMAX - 2, or the number in the environment variable FASTENERS_TIMED_WAIT_SIGNAL.
// The library sends it only to a thread in a timed wait, from a timer of that thread's own, and
// installs a handler that does nothing, only while the application has no handler for it: it
// never takes a signal over. 0 turns the signal off; timed waits then block in a helper thread
// instead, which costs one more thread wake-up per hand-off. They do the same while the
// application handles the signal or the waiting thread blocks it. Affects timed waits that start
// afterwards; does nothing on Windows. Throws std::invalid_argument for a number that is no
// signal. Thread-safe.
FASTENERS_API void set_timed_wait_signal(int signal_number);

// The signal timed waits use (0: none, and always 0 on Windows).
FASTENERS_API int timed_wait_signal() noexcept;

}  // namespace fasteners
