// The core of every public semaphore type: one semaphore object of any backend, and its deadlines.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "fasteners/detail/export.hpp"
#include "fasteners/detail/lock_core.hpp"

namespace fasteners {
namespace detail {

namespace semaphore {
class semaphore_object;  // Defined in src/semaphore/semaphore_object.hpp.
}  // namespace semaphore

// One semaphore object of any backend, with the members of std::counting_semaphore that fit a
// semaphore shared by processes. Thread-safe: any thread may call any member at any time, except
// that moving or destroying the object must not race with other calls on it. Every member but the
// destructor, held() and slots() throws std::system_error(operation_not_permitted) on an object
// moved from.
class FASTENERS_API semaphore_core {
 public:
  ~semaphore_core();
  semaphore_core(semaphore_core&& other) noexcept;
  semaphore_core& operator=(semaphore_core&& other) noexcept;
  semaphore_core(const semaphore_core&) = delete;
  semaphore_core& operator=(const semaphore_core&) = delete;

  // Takes one more slot, waiting as long as it takes.
  void acquire();
  // Takes one more slot if one is free now.
  bool try_acquire();
  // Takes one more slot, waiting at most `d` (zero or less: one try). Throws
  // std::invalid_argument for NaN.
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& d) {
    return acquire_until(deadline_after(d));
  }
  // Takes one more slot, waiting until `t` on `Clock`. Throws std::invalid_argument for NaN.
  template <class Clock, class Duration>
  bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& t) {
    struct by_deadline {
      semaphore_core& core;
      bool acquire_until(lock_mode, std::chrono::steady_clock::time_point until) {
        return core.acquire_until(until);
      }
    } adapter{*this};
    return acquire_until_on_clock(adapter, lock_mode::exclusive, t);
  }
  // Takes one more slot, waiting until `until`; a time in the past means one try.
  bool acquire_until(std::chrono::steady_clock::time_point until);
  // Gives back one slot that this object holds (any of them, from any thread). Throws
  // std::system_error(operation_not_permitted) if it holds none.
  void release();
  // How many slots this object holds now.
  std::size_t held() const noexcept;
  // N: how many slots the semaphore has, as this object was constructed with.
  std::size_t slots() const noexcept { return slots_; }

 protected:
  explicit semaphore_core(std::unique_ptr<semaphore::semaphore_object> object) noexcept;
  semaphore::semaphore_object* object() const noexcept { return object_.get(); }

 private:
  std::unique_ptr<semaphore::semaphore_object> object_;
  std::size_t slots_ = 0;
};

}  // namespace detail
}  // namespace fasteners
