// The lock protocol on a lock file, written once over the platforms' byte-range locks.
//
// Every holder locks the main region: readers shared, writers exclusive. A writer that cannot
// take it at once first takes the gate, a byte far beyond any content, and keeps it while it
// waits (and while it then holds the lock); a reader takes the main region and the gate together,
// shared, and lets go of the gate at once. So readers pass an open gate freely and queue at a
// closed one: once a writer waits, new readers wait behind it instead of starving it. Readers
// that already share the lock ask whether a writer waits at the gate (writer_waiting()) before
// they let more readers of their process join. Whole-file lockers (python-fasteners, lockf)
// cover both regions, so they conflict with this protocol in both directions.
#pragma once

#include <filesystem>
#include <system_error>

#include "platform.hpp"

namespace fasteners::detail::file::gate_protocol {

using platform::native_handle;

// One attempt at a lock of `mode` through `handle`, which holds nothing, that never waits. A
// writer locks only the main region, leaving the gate free for the next writer to announce
// itself. Returns whether the lock was taken; throws std::system_error naming `path` on failure.
bool try_lock(native_handle handle, lock_mode mode, const std::filesystem::path& path);

// A writer's first step when the lock is taken: waits for the gate, then holds it.
void wait_gate(native_handle handle, const std::filesystem::path& path);
// Takes the gate if it is free; returns whether it did.
bool try_gate(native_handle handle, const std::filesystem::path& path);
// Lets go of the gate, which `handle` holds.
void release_gate(native_handle handle) noexcept;

// Waits for the lock of `mode`: a writer (holding the gate) for the main region, a reader for the
// main region and the gate at once, after which it lets go of the gate.
void wait_main(native_handle handle, lock_mode mode, const std::filesystem::path& path);

// Whether a writer of another process or handle waits at the gate, so that the readers of this
// process must stop joining the shared lock that `held` holds. Best effort.
bool writer_waiting(native_handle held) noexcept;

// Releases everything `handle` holds.
std::error_code release(native_handle handle) noexcept;

// The removal protocol, called while `handle` holds the lock in `held` mode: deletes `path` if
// nobody else holds or waits for the lock (a reader checks by turning its lock into a write lock,
// where the platform can) and the path still names the file `id`, and that file has no other name.
// The lock stays held until release(). Returns whether it deleted the path.
bool remove_if_unused(native_handle handle, lock_mode held, const platform::file_identity& id,
                      const std::filesystem::path& path) noexcept;

}  // namespace fasteners::detail::file::gate_protocol
