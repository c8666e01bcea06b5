// `fasteners status`: whether a lock file is free or held, and by which processes.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace fasteners::tool {

struct status_options {
  std::string lock_file;                // With --postgres: the lock's name.
  std::optional<std::string> postgres;  // --postgres CONNINFO: a PostgreSQL advisory lock.
  bool json = false;
};

// Adds the `status` subcommand to `app`; what it parses lands in `options`.
CLI::App* add_status_command(CLI::App& app, status_options& options);

// Prints the state of the lock on stdout, as text or JSON; returns exit_free or exit_held. Never
// creates, opens or locks the file (with --postgres: never takes a lock, in a session of its own).
// Throws tool_error when the state cannot be found out.
int status(const status_options& options);

}  // namespace fasteners::tool
