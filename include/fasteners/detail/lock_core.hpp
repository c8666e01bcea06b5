// The core of every public lock type: one lock object of any backend, its guards, and deadlines.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "fasteners/async.hpp"
#include "fasteners/detail/export.hpp"
#include "fasteners/timeout.hpp"

namespace fasteners {
namespace detail {

enum class lock_mode { shared, exclusive };

// Throws std::invalid_argument if `count` is NaN: a wait of no known length has no deadline.
template <class Rep>
void check_not_nan(Rep count) {
  if constexpr (std::is_floating_point_v<Rep>) {
    if (std::isnan(count)) throw std::invalid_argument("fasteners: the timeout is NaN");
  }
}

// Converts a relative wait to a steady-clock deadline once, saturating instead of overflowing.
// Throws std::invalid_argument for NaN.
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(const std::chrono::duration<Rep, Period>& d) {
  using std::chrono::steady_clock;
  check_not_nan(d.count());
  const auto now = steady_clock::now();
  const std::chrono::duration<double> limit = steady_clock::time_point::max() - now;
  if (!(std::chrono::duration<double>(d) < limit)) return steady_clock::time_point::max();
  if (d <= d.zero()) return now;
  return now + std::chrono::ceil<steady_clock::duration>(d);
}

// `t` as a steady-clock deadline, saturating at the ends of its range instead of overflowing.
template <class Duration>
std::chrono::steady_clock::time_point saturated(
    const std::chrono::time_point<std::chrono::steady_clock, Duration>& t) {
  using std::chrono::steady_clock;
  using seconds = std::chrono::duration<double>;
  const seconds since_epoch = t.time_since_epoch();
  if (!(since_epoch < seconds(steady_clock::time_point::max().time_since_epoch()))) {
    return steady_clock::time_point::max();
  }
  if (!(since_epoch > seconds(steady_clock::time_point::min().time_since_epoch()))) {
    return steady_clock::time_point::min();
  }
  return std::chrono::ceil<steady_clock::duration>(t);
}

// Waits through `core` (a lock core with acquire_until(mode, steady_clock::time_point)) until `t`
// on `Clock`. Throws std::invalid_argument for a NaN time.
template <class Core, class Clock, class Duration>
bool acquire_until_on_clock(Core& core, lock_mode mode,
                            const std::chrono::time_point<Clock, Duration>& t) {
  using std::chrono::steady_clock;
  check_not_nan(t.time_since_epoch().count());
  if constexpr (std::is_same_v<Clock, steady_clock>) {
    return core.acquire_until(mode, saturated(t));
  } else {
    // Another clock may jump: wait in slices measured on the steady clock, re-checking it. The
    // distance to `t` is taken in floating-point seconds first, since `t - now` overflows in the
    // clock's own units for a `t` far ahead (the year 2286 in nanoseconds); near `t` it is exact.
    using seconds = std::chrono::duration<double>;
    for (;;) {
      const auto now = Clock::now();
      const seconds ahead = seconds(t.time_since_epoch()) - seconds(now.time_since_epoch());
      if (ahead > seconds(1)) {
        if (core.acquire_until(mode, deadline_after(ahead))) return true;
        continue;
      }
      if (t <= now) return core.acquire_until(mode, steady_clock::time_point::min());
      if (core.acquire_until(mode, deadline_after(t - now))) return true;
    }
  }
}

namespace engine {
class lock_object;  // Defined in src/engine/lock_object.hpp; on the heap, so moves are cheap.
}  // namespace engine

// One lock object of any backend: the core of every public lock type, which adds what its backend
// names (a path, a lock name). Thread-safe: any thread may call any member at any time, except
// that moving or destroying the object must not race with other calls on it. Every member but
// the destructor throws std::system_error(operation_not_permitted) on an object moved from.
class FASTENERS_API lock_core {
 public:
  ~lock_core();
  lock_core(lock_core&& other) noexcept;
  lock_core& operator=(lock_core&& other) noexcept;
  lock_core(const lock_core&) = delete;
  lock_core& operator=(const lock_core&) = delete;

  // python-fasteners' acquire: waits forever, tries once (blocking == false), or waits at most
  // `timeout`. Throws std::invalid_argument for a negative or NaN timeout.
  bool acquire(lock_mode mode, bool blocking, const timeout_type& timeout);
  // Waits until `deadline`; a deadline in the past means one try.
  bool acquire_until(lock_mode mode, std::chrono::steady_clock::time_point deadline);
  // Waits until `t` on `Clock`. Throws std::invalid_argument for a NaN time.
  template <class Clock, class Duration>
  bool acquire_until(lock_mode mode, const std::chrono::time_point<Clock, Duration>& t) {
    return acquire_until_on_clock(*this, mode, t);
  }
  // Waits at most `d` (zero or less: one try). Throws std::invalid_argument for NaN.
  template <class Rep, class Period>
  bool acquire_for(lock_mode mode, const std::chrono::duration<Rep, Period>& d) {
    return acquire_until(mode, deadline_after(d));
  }
  // Starts an acquisition that waits until `until` without blocking the calling thread;
  // `handler` runs once with its outcome (see async_acquisition).
  async_acquisition acquire_async(lock_mode mode, std::chrono::steady_clock::time_point until,
                                  async_handler handler);
  // The same until `t` on `Clock`, measured on the steady clock from now. Throws
  // std::invalid_argument for a NaN time.
  template <class Clock, class Duration>
  async_acquisition acquire_async_until(lock_mode mode,
                                        const std::chrono::time_point<Clock, Duration>& t,
                                        async_handler handler) {
    check_not_nan(t.time_since_epoch().count());
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
      return acquire_async(mode, saturated(t), std::move(handler));
    } else {
      using seconds = std::chrono::duration<double>;
      const seconds ahead =
          seconds(t.time_since_epoch()) - seconds(Clock::now().time_since_epoch());
      return acquire_async(mode, deadline_after(ahead), std::move(handler));
    }
  }
  // Releases one hold of `mode`. Throws std::system_error(operation_not_permitted) if this
  // object holds none.
  void release(lock_mode mode);
  // Whether this object holds at least one lock of `mode`.
  bool holds(lock_mode mode) const noexcept;
  // The OS handle (a descriptor on POSIX, a HANDLE on Windows, a session's socket) through which
  // this process holds the lock while this object holds one; -1 otherwise.
  std::intptr_t native_handle() const noexcept;
  // The fencing token of what this object holds, with the fencing option: while it holds the
  // exclusive lock, that acquisition's token; while it holds a shared lock, the latest exclusive
  // acquisition's (0 if none). Tokens of one lock strictly increase over its exclusive
  // acquisitions in every process. Throws std::system_error(operation_not_permitted) without the
  // option, while it holds nothing, or once what it held was lost.
  std::uint64_t fencing_token() const;

 protected:
  explicit lock_core(std::unique_ptr<engine::lock_object> object) noexcept;
  // The object, or nullptr once moved from.
  engine::lock_object* object() const noexcept { return object_.get(); }

 private:
  std::unique_ptr<engine::lock_object> object_;
};

// Holds one lock of mode M on a lock core until destroyed. Move-only.
template <lock_mode M, class Core = lock_core>
class [[nodiscard]] basic_guard {
 public:
  basic_guard(basic_guard&& other) noexcept : lock_(std::exchange(other.lock_, nullptr)) {}
  basic_guard& operator=(basic_guard&& other) noexcept {
    if (this != &other) {
      reset();
      lock_ = std::exchange(other.lock_, nullptr);
    }
    return *this;
  }
  basic_guard(const basic_guard&) = delete;
  basic_guard& operator=(const basic_guard&) = delete;
  ~basic_guard() { reset(); }

  // Releases the lock now; throws as the lock's release does.
  void unlock() { std::exchange(lock_, nullptr)->release(M); }
  bool owns_lock() const noexcept { return lock_ != nullptr; }
  explicit operator bool() const noexcept { return owns_lock(); }

  // Adopts a lock already taken on `lock`; used by the lock types.
  explicit basic_guard(Core& lock) noexcept : lock_(&lock) {}

 private:
  void reset() noexcept {
    if (lock_ == nullptr) return;
    try {
      std::exchange(lock_, nullptr)->release(M);
    } catch (...) {
      // A destructor never throws; the OS (or the server) drops the lock with its holder anyway.
    }
  }
  Core* lock_;
};

}  // namespace detail
}  // namespace fasteners
