// The threads of the library's own that wait for backends (a lock file's kernel waits), kept for
// reuse.
#pragma once

#include <system_error>

#include "fasteners/detail/export.hpp"

namespace fasteners::detail::engine {

// Runs `job(arg)` on a thread of the library's own: an idle one if there is one, else a new one
// (platform::start_thread: every signal blocked, cancellation off, a small stack). A thread waits
// idle for the next job for a while after each one, then ends; no signal or timer is involved.
// Returns the error if no thread could be started. Thread-safe; after fork() the child starts
// with no idle thread.
FASTENERS_API std::error_code run_on_pool_thread(void (*job)(void*), void* arg) noexcept;

}  // namespace fasteners::detail::engine
