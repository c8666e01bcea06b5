// `fasteners run`: take a lock, run a command while holding it, exit with the command's status.
#pragma once

#include "run_arguments.hpp"

namespace fasteners::tool {

// Runs the parsed command line; returns the exit code: the command's exit status (128 + N if
// signal N killed it), the conflict exit code when the lock could not be had, 0 when a lock on a
// descriptor was taken or released, or a flock(1) error code. With -F it returns only if the lock
// could not be had. Throws tool_error for usage and OS errors, and (with --postgres) when the
// database cannot be used.
int run(const run_options& options);

}  // namespace fasteners::tool
