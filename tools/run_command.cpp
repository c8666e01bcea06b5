// `fasteners run`: take a lock, run a command while holding it, exit with the command's status.
#include "run_command.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "errors.hpp"
#include "postgres.hpp"
#include "process.hpp"
#include "run_lock.hpp"
#include "system.hpp"
#include "verbose_report.hpp"

namespace fasteners::tool {
namespace {

namespace fs = std::filesystem;
using seconds = std::chrono::duration<double>;

// flock(1)'s exit status when COMMAND cannot be executed: 71 when memory runs out, else 69.
int exec_exit_code(const std::system_error& e) {
  return e.code() == std::errc::not_enough_memory ? exit_os_error : exit_unavailable;
}

// flock(1) does not create the lock file's directory, and neither does `fasteners run` (the
// library would): a misspelt path must not silently become a new lock.
void check_directory(const fs::path& path) {
  const auto parent = path.parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  if (!fs::exists(parent, ec) && !ec) {
    throw tool_error(exit_no_input, "fasteners: cannot open lock file '" + utf8_of(path) +
                                        "': the directory '" + utf8_of(parent) +
                                        "' does not exist");
  }
}

// Refuses what no form of `fasteners run` can do, before anything is locked.
void check_usage(const run_options& o) {
  if (o.shell_command && !o.command.empty()) {
    throw usage_error("run", "give either COMMAND or -c 'SHELL COMMAND', not both");
  }
  if (o.no_fork && o.close) {
    throw usage_error("run",
                      "-F and -o cannot be used together: with -F the command replaces fasteners "
                      "and holds the lock, which -o would take from it");
  }
}

// Refuses what `fasteners run LOCKFILE COMMAND` cannot do here, before the file is opened.
void check_file_usage(const run_options& o) {
  if (o.unlock) {
    throw usage_error("run",
                      "-u releases the lock held through a descriptor that the shell opened: " +
                          o.command_name + " -u FD, without a command");
  }
  if (o.use_flock && !flock_supported()) {
    throw usage_error("run", "--flock is not available on " + system_name() +
                                 ", which has no flock(2); without it the lock is the library's, "
                                 "which python-fasteners shares");
  }
  if (o.fence && o.use_flock) {
    throw usage_error("run", o.command_name == "fasteners run"
                                 ? "--fence cannot be used with --flock: a flock(2) lock takes no "
                                   "fencing tokens; without --flock the lock is the library's, "
                                   "which does"
                                 : "--fence is not for " + o.command_name +
                                       ", whose locks are flock(2)'s, which take no fencing "
                                       "tokens: use fasteners run --fence");
  }
  if (o.no_fork && !command_can_replace_process()) {
    throw usage_error("run", "-F is not available on " + system_name() +
                                 ", where no program can replace a process; without it fasteners "
                                 "holds the lock until the command ends");
  }
}

// Refuses a command line without a command where `option`, whose form is `form` ("--postgres
// CONNINFO [OPTIONS] NAME"), takes a lock that needs one: the descriptor form cannot be used.
void check_command_given(const run_options& o, const std::string& option, const std::string& form) {
  if (!o.command.empty() || o.shell_command) return;
  throw usage_error("run", "no command given: " + o.command_name + " " + form +
                               " COMMAND [ARGS...]" +
                               (descriptor_number(o.lock_file)
                                    ? "; the descriptor form (FD without a command) cannot be "
                                      "used with " +
                                          option
                                    : ""));
}

// Refuses what --slots cannot do, before anything is locked. A slot of a semaphore belongs to
// this process, which holds it while the command runs (as with -o, which it accepts).
void check_semaphore_usage(const run_options& o) {
  const auto refuse = [](const std::string& option, const std::string& why) {
    return usage_error("run", option + " cannot be used with --slots: " + why);
  };
  if (o.shared) throw refuse("-s", "each slot is held alone; N slots let N commands run at once");
  if (o.unlock) throw refuse("-u", "a slot is given back when the command ends");
  if (o.use_flock) {
    throw refuse("--flock", "a semaphore's slots are fcntl locks on parts of its file");
  }
  if (o.no_fork) {
    throw refuse("-F",
                 "the slot belongs to fasteners, which must wait for the command to give it back");
  }
  if (o.fence) throw refuse("--fence", "a semaphore's slots take no fencing tokens");
  check_command_given(
      o, "--slots",
      o.postgres ? "--slots N --postgres CONNINFO [OPTIONS] NAME" : "--slots N [OPTIONS] LOCKFILE");
}

// Refuses what --postgres cannot do, before anything is asked of the database.
void check_postgres_usage(const run_options& o) {
  if (o.use_flock) {
    throw usage_error("run",
                      "--flock cannot be used with --postgres: --flock takes a flock(2) lock on a "
                      "file, --postgres a PostgreSQL advisory lock");
  }
  if (o.unlock || o.no_fork) {
    throw usage_error("run", std::string(o.unlock ? "-u" : "-F") +
                                 " cannot be used with --postgres: the lock belongs to the "
                                 "database session of this process, which ends with it");
  }
  check_command_given(o, "--postgres", "--postgres CONNINFO [OPTIONS] NAME");
  if (o.on_loss && *o.on_loss == "term" && o.slots) {
    throw usage_error("run",
                      "--on-loss=term cannot be used with --slots: a semaphore's slot does not "
                      "tell of its loss while the command runs");
  }
  if (o.lock_file.empty()) {
    throw usage_error("run", "the lock name given with --postgres is empty");
  }
}

// Takes `lock` as -n, -w and -v say; returns whether it did. Throws the lock's tool_error when it
// cannot be used.
bool take(run_lock& lock, const run_options& o, const std::optional<seconds>& timeout) {
  const bool one_try = o.nonblocking || (timeout && timeout->count() == 0);
  try {
    return take_and_report(lock, one_try, timeout, {o.verbose, o.program_name, lock.taken()},
                           lock.what(), [&] { return lock.holders(); });
  } catch (const std::system_error& e) {
    throw lock.error_for(e);
  }
}

// The fencing token of `lock`, which is held, in decimal, for FASTENERS_FENCE. Throws the lock's
// tool_error when there is none (a PostgreSQL lock lost already).
std::string fence_of(const run_lock& lock) {
  try {
    return std::to_string(lock.fencing_token());
  } catch (const std::system_error& e) {
    throw lock.error_for(e);
  }
}

// Keeps the lock object alive, without releasing it, until the process exits: releasing would
// take the lock from the command and whatever it left running with the inherited descriptor.
// The OS drops this process's share of the lock when it exits, as flock(1)'s does.
void keep_until_exit(std::unique_ptr<run_lock> lock) {
  // Still reachable, so leak checkers stay quiet; volatile, so the store is not optimized away.
  [[maybe_unused]] static run_lock* volatile kept = nullptr;
  kept = lock.release();
}

command_status start_and_wait(const command_line& command, std::intptr_t inherited) {
  command_process process{};
  try {
    process = start_command(command, inherited);
  } catch (const std::system_error& e) {
    throw tool_error(exec_exit_code(e), e.what());
  }
  return wait_command(process);
}

// Runs `command` while this process holds `lock`, then releases it; returns the command's exit
// status. A lock that ends with this process keeps Ctrl+C from ending it meanwhile. With
// `terminate_on_loss`, a lock lost meanwhile ends the command at once (terminate_command()).
int run_holding(run_lock& lock, command_line command, bool terminate_on_loss) {
  command_status status;
  {
    std::optional<interrupts_ignored> ignored;
    if (lock.ends_with_this_process()) {
      ignored.emplace();
      command.default_signals = ignored->ignored_here();
    }
    if (terminate_on_loss) {
      command_process process{};
      try {
        process = start_command(command, -1);
      } catch (const std::system_error& e) {
        throw tool_error(exec_exit_code(e), e.what());
      }
      // Until collected, the process id is the command's: no other process gets the signal.
      lock.on_loss([process] { terminate_command(process); });
      await_command_end(process);
      lock.on_loss(nullptr);
      status = wait_command(process);
    } else {
      status = start_and_wait(command, -1);
    }
  }
  try {
    lock.release();
  } catch (const std::system_error& e) {
    // The command has run; its status stays the exit status.
    std::cerr << "fasteners: warning: " << lock.what()
              << " was lost while the command ran: " << lock.describe(e) << std::endl;
  }
  return status.exit_code;
}

// Runs `command` under `lock`: handed down to the command, which inherits its descriptor (and
// with -F becomes this process), or held by this process until the command ends (-o, and where
// the lock cannot be inherited). Returns the command's exit status.
int run_under(std::unique_ptr<run_lock> lock, const run_options& o, const command_line& command) {
  const auto handle = lock->native_handle();
  try {
    if (o.no_fork) exec_command(command, handle);
  } catch (const std::system_error& e) {
    throw tool_error(exec_exit_code(e), e.what());
  }
  if (o.close || handle < 0 || !command_can_inherit_lock()) {
    return run_holding(*lock, command, o.on_loss && *o.on_loss == "term");
  }
  const command_status status = start_and_wait(command, handle);
  keep_until_exit(std::move(lock));
  return status.exit_code;
}

// The lock that `o` asks for: with `slots` (--slots), one of that many slots of a semaphore.
std::unique_ptr<run_lock> make_lock(const run_options& o, const std::optional<std::size_t>& slots) {
  if (slots) check_semaphore_usage(o);
  if (o.postgres) {
    check_postgres_usage(o);
    if (slots) return make_postgres_semaphore_lock(o, *slots);
    return make_postgres_lock(o);
  }
  check_file_usage(o);
  const fs::path path = path_from_utf8(o.lock_file);
  check_directory(path);
  if (slots) return make_file_semaphore_lock(path, *slots);
  return make_file_lock(path, o);
}

// `fasteners run [OPTIONS] FD`: takes (or with -u releases) the lock on the open file of
// descriptor FD, which the shell opened; the lock stays with that open file after this process
// ends.
int run_descriptor(const run_options& o, int fd, const std::optional<seconds>& timeout,
                   int conflict_exit_code) {
  if (o.fence) {
    throw usage_error("run",
                      "--fence cannot be used with the descriptor form (" + o.command_name +
                          " FD): it runs no command to give the token to; give a LOCKFILE and a "
                          "COMMAND");
  }
  if (!descriptor_locks_supported(o.use_flock)) {
    throw usage_error(
        "run", command_can_inherit_lock()
                   ? "the descriptor form (fasteners run FD) needs open-file-description locks, "
                     "which " +
                         system_name() + " lacks: use --flock, or give a LOCKFILE and a COMMAND"
                   : "the descriptor form (fasteners run FD) is not available on " + system_name() +
                         ", where a lock cannot outlive the process that takes it: give a "
                         "LOCKFILE and a COMMAND");
  }
  if (o.unlock) {
    // As flock(1), -v tells how long the unlock call took.
    const auto start = std::chrono::steady_clock::now();
    try {
      unlock_descriptor(fd, o.use_flock);
    } catch (const std::system_error& e) {
      throw tool_error(file_exit_code(e), e.what());
    }
    verbose_report(o.verbose, o.program_name).took(std::chrono::steady_clock::now() - start);
    return 0;
  }
  const auto lock = make_descriptor_lock(fd, o);
  return take(*lock, o, timeout) ? 0 : conflict_exit_code;
}

}  // namespace

int run(const run_options& o) {
  const auto timeout = parse_timeout(o.timeout);
  const int conflict_exit_code = parse_conflict_exit_code(o.conflict_exit_code);
  const auto slots = parse_slots(o.slots);
  check_usage(o);
  if (!o.postgres && !slots && !o.shell_command && o.command.empty()) {
    if (const auto fd = descriptor_number(o.lock_file)) {
      return run_descriptor(o, *fd, timeout, conflict_exit_code);
    }
    throw usage_error("run", "no command given: " + o.command_name +
                                 " [OPTIONS] LOCKFILE COMMAND [ARGS...], or " + o.command_name +
                                 " [OPTIONS] FD to lock a descriptor the shell opened");
  }
  if (o.on_loss) {
    if (*o.on_loss != "warn" && *o.on_loss != "term") {
      throw usage_error("run", "invalid --on-loss '" + *o.on_loss + "': warn or term");
    }
    if (!o.postgres) {
      throw usage_error("run", "--on-loss needs --postgres: a lock file's lock is never lost");
    }
  }
  auto lock = make_lock(o, slots);
  if (!take(*lock, o, timeout)) return conflict_exit_code;
  command_line command =
      o.shell_command ? shell_command(*o.shell_command) : command_line{o.command};
  if (o.fence) command.environment.emplace_back("FASTENERS_FENCE", fence_of(*lock));
  verbose_report(o.verbose, o.program_name).executing(command.argv[0]);
  return run_under(std::move(lock), o, command);
}

}  // namespace fasteners::tool
