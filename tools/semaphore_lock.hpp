// `fasteners run --slots N`: one slot of a counting semaphore, as the run_lock that the command
// takes, for any semaphore type of the library with the members of detail::semaphore_core
// (fasteners::interprocess_semaphore; a PostgreSQL one alike).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "errors.hpp"
#include "run_lock.hpp"

namespace fasteners::tool {

// One slot of `Semaphore`, taken at most once. The slot belongs to this process, which holds it
// until the command ends (the semaphore's descriptors do not pass to the command, so -o is what
// always happens). A backend derives from it and adds holders() (whom -v says it waits for), and
// where its errors need it, error_for() and describe().
template <class Semaphore>
class semaphore_lock : public run_lock {
 public:
  // `name` names the semaphore in messages: "the semaphore '/tmp/jobs'".
  semaphore_lock(Semaphore semaphore, std::string name)
      : semaphore_(std::move(semaphore)), name_(std::move(name)) {}

  std::string what() const override {
    const auto n = semaphore_.slots();
    return "a slot of " + name_ + " (" + std::to_string(n) + (n == 1 ? " slot)" : " slots)");
  }
  bool try_acquire() override { return semaphore_.try_acquire(); }
  bool acquire(std::optional<seconds> timeout) override {
    if (timeout) return semaphore_.try_acquire_for(*timeout);
    semaphore_.acquire();
    return true;
  }
  std::intptr_t native_handle() const override { return -1; }
  void release() override { semaphore_.release(); }
  bool ends_with_this_process() const override { return true; }
  std::string taken() const override { return "a slot"; }
  // A semaphore that records another number of slots, or a file that is not a semaphore's, is bad
  // usage (the library's invalid_argument); other failures are the backend's.
  tool_error error_for(const std::system_error& e) const override {
    if (e.code() != std::errc::invalid_argument) return backend_error(e);
    std::string message = describe(e);
    // The library speaks of the object's N, which here is --slots.
    const std::string object_says = "as this object says";
    if (const auto at = message.find(object_says); at != std::string::npos) {
      message.replace(at, object_says.size(), "as --slots says");
    }
    return tool_error(exit_usage, message);
  }

 protected:
  // How the tool ends when the semaphore cannot be used otherwise: as for a lock file.
  virtual tool_error backend_error(const std::system_error& e) const {
    return run_lock::error_for(e);
  }

  Semaphore semaphore_;
  const std::string name_;
};

}  // namespace fasteners::tool
