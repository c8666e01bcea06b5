// What only the POSIX tests use beyond the portable test support: processes by id, privileges.
#pragma once

#include <sys/types.h>

#include <chrono>

#include "common/test_support.hpp"

namespace fasteners_test {

// Waits for process `pid` (a child of this process) as child_process::wait does: returns its exit
// code, or 128 + the signal that ended it; kills it and returns -1 after `timeout`.
int wait_for_pid(pid_t pid, std::chrono::milliseconds timeout = k_long);
// Whether process `pid` exists and has not ended (a zombie has ended).
bool process_alive(pid_t pid);
// In a helper: if running as root, drops to uid/gid 65534 for good (CI runs as root, and
// permission checks mean nothing for root). Returns whether the process now runs unprivileged.
bool drop_privileges();
// In a helper: drops privileges (drop_privileges()) and forbids this process to start threads
// (RLIMIT_NPROC 0, which root is exempt from) until allow_threads(). Returns whether it did.
bool forbid_threads();
// Undoes forbid_threads()'s limit. Returns whether it did.
bool allow_threads();

}  // namespace fasteners_test
