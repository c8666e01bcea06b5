// A semaphore object of any backend: its binding to the semaphore's state and the slots it holds.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/export.hpp"
#include "semaphore/semaphore_state.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::semaphore {

// One semaphore object. Bound to its semaphore's state from its first acquire until it is
// destroyed, so that the state (and the backend's file or session) outlives every slot it holds.
// After fork(), a child's object holds nothing and binds anew. Thread-safe.
class FASTENERS_API semaphore_object {
 public:
  explicit semaphore_object(std::size_t slots) : slots_(slots) {}
  virtual ~semaphore_object() = default;
  semaphore_object(const semaphore_object&) = delete;
  semaphore_object& operator=(const semaphore_object&) = delete;

  // Takes one more slot, waiting until `until`; returns whether it did. Throws std::system_error
  // through fail(): invalid_argument when the semaphore records another N, and the backend's.
  bool acquire(deadline until) FASTENERS_EXCLUDES(mu_);
  // Gives back the slot taken last. Throws std::system_error(operation_not_permitted) if the
  // object holds none, and the backend's failure to let go (the slot is given back anyway).
  void release() FASTENERS_EXCLUDES(mu_);
  std::size_t held() const noexcept FASTENERS_EXCLUDES(mu_);
  std::size_t slots() const noexcept { return slots_; }

  // Throws std::system_error(ec) with "fasteners: cannot <action> <this semaphore>: <detail>".
  [[noreturn]] virtual void fail(std::error_code ec, std::string_view action,
                                 std::string_view detail) const = 0;

 protected:
  // The state of the semaphore, found or made (opening its file). Throws.
  virtual std::shared_ptr<semaphore_state> find_state() = 0;
  // Gives back every slot the object holds; never throws. A backend's destructor calls it first.
  void release_all() noexcept FASTENERS_EXCLUDES(mu_);

 private:
  // The bound state, binding first if need be.
  std::shared_ptr<semaphore_state> bound() FASTENERS_EXCLUDES(mu_);
  // Takes the slot taken last off the object's list, with its state; false if it holds none.
  bool take_last(std::shared_ptr<semaphore_state>& state, std::size_t& slot)
      FASTENERS_EXCLUDES(mu_);
  // Forgets a state of the parent after fork(), and the slots the parent holds there.
  void forget_if_stale() FASTENERS_REQUIRES(mu_);

  const std::size_t slots_;
  mutable mutex mu_;
  std::shared_ptr<semaphore_state> state_ FASTENERS_GUARDED_BY(mu_);
  std::vector<std::size_t> held_ FASTENERS_GUARDED_BY(mu_);  // In the order they were taken.
};

}  // namespace fasteners::detail::semaphore
