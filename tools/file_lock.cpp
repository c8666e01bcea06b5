// The locks of `fasteners run` on files: this library's, and whom they wait for; and the slots of
// semaphore files (--slots).
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <vector>

#include "fasteners/holders.hpp"
#include "fasteners/interprocess_reader_writer_lock.hpp"
#include "fasteners/interprocess_semaphore.hpp"
#include "run_command.hpp"
#include "run_lock.hpp"
#include "semaphore_lock.hpp"
#include "system.hpp"
#include "verbose_report.hpp"

namespace fasteners::tool {
namespace {

namespace fs = std::filesystem;

class library_lock final : public run_lock {
 public:
  library_lock(const fs::path& path, bool shared, bool fencing)
      : lock_(path, options(fencing)), path_(path), shared_(shared) {}

  std::string what() const override { return lock_name(shared_, "'" + utf8_of(path_) + "'"); }
  bool try_acquire() override {
    return shared_ ? lock_.acquire_read_lock(false) : lock_.acquire_write_lock(false);
  }
  bool acquire(std::optional<seconds> timeout) override {
    return shared_ ? lock_.acquire_read_lock(true, timeout)
                   : lock_.acquire_write_lock(true, timeout);
  }
  std::string holders() const override { return describe_file_holders(path_, shared_, false); }
  std::intptr_t native_handle() const override { return lock_.native_handle(); }
  void release() override {
    if (shared_) {
      lock_.release_read_lock();
    } else {
      lock_.release_write_lock();
    }
  }
  std::uint64_t fencing_token() const override { return lock_.fencing_token(); }

 private:
  static lock_options options(bool fencing) {
    lock_options o;
    o.fencing = fencing;
    return o;
  }

  interprocess_reader_writer_lock lock_;
  const fs::path path_;
  const bool shared_;
};

bool is_any_of(const std::error_code& ec, std::initializer_list<std::errc> errors) {
  for (const auto e : errors) {
    if (ec == e) return true;
  }
  return false;
}

// Whether `holder`'s lock keeps ours (`shared`, flock(2)'s with `use_flock`) from us.
bool conflicts(bool shared, bool use_flock, const lock_holder& holder) {
  const bool fcntl = holder.mechanism == lock_mechanism::fcntl_ofd ||
                     holder.mechanism == lock_mechanism::fcntl_posix;
  if (use_flock ? holder.mechanism != lock_mechanism::flock : !fcntl) return false;
  return !shared || holder.kind == lock_kind::exclusive || holder.waiting;
}

std::string describe_holder(const lock_holder& h) {
  std::string out = h.pid > 0 ? "pid " + std::to_string(h.pid) : "a process this user cannot see";
  if (!h.command.empty()) out += " (" + h.command + ")";
  return out;
}

// What `describe` says of the locks on the file at `path`, as fasteners::holders() tells; or why
// they are unknown. For -v.
template <class Describe>
std::string with_holders(const fs::path& path, Describe describe) {
  std::error_code ec;
  const auto all = fasteners::holders(path, ec);
  if (ec == std::errc::function_not_supported) {
    return "its holders cannot be looked up on " + system_name();
  }
  if (ec) return "its holders are unknown (" + ec.message() + ")";
  return describe(all);
}

// "held by pid 1 (a) in slot 0, ...; waiting for it first: pid 3 (c)": the holders of the
// semaphore file at `path`'s slots, and the first waiter in line, as fasteners::holders() tells;
// for -v.
std::string describe_semaphore_holders(const fs::path& path) {
  return with_holders(path, [](const std::vector<lock_holder>& all) {
    std::vector<std::string> holding;
    std::vector<std::string> waiting;
    for (const auto& h : all) {
      if (const auto slot = semaphore_slot(h)) {
        holding.push_back(describe_holder(h) + " in slot " + std::to_string(*slot));
      } else if (semaphore_waiter(h)) {
        waiting.push_back(describe_holder(h));
      }
    }
    return describe_waits(holding, false, waiting, false, "held by other processes");
  });
}

class file_semaphore_lock final : public semaphore_lock<interprocess_semaphore> {
 public:
  file_semaphore_lock(const fs::path& path, std::size_t slots)
      : semaphore_lock(interprocess_semaphore(path, slots),
                       "the semaphore '" + utf8_of(path) + "'") {}
  std::string holders() const override { return describe_semaphore_holders(semaphore_.path()); }
};

}  // namespace

std::unique_ptr<run_lock> make_file_semaphore_lock(const fs::path& path, std::size_t slots) {
  std::optional<std::size_t> recorded;
  try {
    recorded = semaphore_slots(path);
  } catch (const std::system_error& e) {
    throw tool_error(file_exit_code(e), e.what());
  }
  if (recorded && *recorded != slots) {
    throw tool_error(exit_usage, "fasteners run: the semaphore file '" + utf8_of(path) + "' has " +
                                     std::to_string(*recorded) + " slots, not " +
                                     std::to_string(slots) + " as --slots says: give --slots " +
                                     std::to_string(*recorded) + ", or another file");
  }
  try {
    return std::make_unique<file_semaphore_lock>(path, slots);
  } catch (const std::invalid_argument& e) {
    std::string why = e.what();
    const std::string prefix = "fasteners: ";
    if (why.rfind(prefix, 0) == 0) why.erase(0, prefix.size());
    throw usage_error("run", "invalid --slots: " + why);
  }
}

std::string lock_name(bool shared, const std::string& name) {
  return std::string("the ") + (shared ? "shared" : "exclusive") + " lock on " + name;
}

tool_error run_lock::error_for(const std::system_error& e) const {
  return tool_error(file_exit_code(e), e.what());
}

// flock(1)'s exit status for a lock file that cannot be opened: 71 when memory or descriptors
// run out, 73 when it cannot be created on a read-only or full file system, 66 otherwise; and for
// a failed lock call on an open file (lock_call_error): 71 when locks or memory run out, 65
// otherwise. The library's errors count as opening ones, as nearly all are (ENOLCK, of its lock
// calls, is 71 either way). Compared as conditions, so Windows errors count as their errno
// equivalents (ERROR_DISK_FULL as no_space_on_device).
int file_exit_code(const std::system_error& e) {
  const std::error_code& ec = e.code();
  if (ec.category() != std::system_category() && ec.category() != std::generic_category()) {
    return exit_os_error;
  }
  using std::errc;
  if (dynamic_cast<const lock_call_error*>(&e) != nullptr) {
    return is_any_of(ec, {errc::no_lock_available, errc::not_enough_memory}) ? exit_os_error
                                                                             : exit_data_error;
  }
  if (is_any_of(ec, {errc::not_enough_memory, errc::too_many_files_open,
                     errc::too_many_files_open_in_system, errc::no_lock_available})) {
    return exit_os_error;
  }
  if (is_any_of(ec, {errc::read_only_file_system, errc::no_space_on_device})) {
    return exit_cannot_create;
  }
  return exit_no_input;
}

std::string describe_file_holders(const fs::path& path, bool shared, bool use_flock) {
  return with_holders(path, [&](const std::vector<lock_holder>& all) {
    std::vector<std::string> holding;
    std::vector<std::string> waiting;
    std::size_t possible = 0;
    bool exclusive = false;
    for (const auto& h : all) {
      if (!conflicts(shared, use_flock, h)) continue;
      if (!h.inspectable && h.pid > 0) {
        ++possible;  // One of the processes this user may not inspect: counted, not named.
      } else if (h.waiting) {
        waiting.push_back(describe_holder(h));
      } else {
        exclusive = exclusive || h.kind == lock_kind::exclusive;
        holding.push_back(describe_holder(h));
      }
    }
    if (possible > 0) {
      holding.push_back("one of " + std::to_string(possible) +
                        " processes this user may not inspect");
    }
    return describe_waits(holding, exclusive, waiting, true, "held by another process");
  });
}

std::unique_ptr<run_lock> make_file_lock(const fs::path& path, const run_options& o) {
  if (o.use_flock) return make_flock_lock(path, o.shared);
  return std::make_unique<library_lock>(path, o.shared, o.fence);
}

}  // namespace fasteners::tool
