// Clang's thread-safety annotations, and the annotated mutex the library's state is guarded by.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "platform.hpp"

#if defined(__clang__)
#define FASTENERS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define FASTENERS_THREAD_ANNOTATION(x)
#endif

#define FASTENERS_CAPABILITY(name) FASTENERS_THREAD_ANNOTATION(capability(name))
#define FASTENERS_SCOPED_CAPABILITY FASTENERS_THREAD_ANNOTATION(scoped_lockable)
#define FASTENERS_GUARDED_BY(m) FASTENERS_THREAD_ANNOTATION(guarded_by(m))
#define FASTENERS_REQUIRES(...) FASTENERS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define FASTENERS_ACQUIRE(...) FASTENERS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define FASTENERS_RELEASE(...) FASTENERS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define FASTENERS_EXCLUDES(...) FASTENERS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define FASTENERS_ACQUIRED_AFTER(...) FASTENERS_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define FASTENERS_ACQUIRED_BEFORE(...) FASTENERS_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define FASTENERS_RETURN_CAPABILITY(x) FASTENERS_THREAD_ANNOTATION(lock_returned(x))
#define FASTENERS_NO_THREAD_SAFETY_ANALYSIS FASTENERS_THREAD_ANNOTATION(no_thread_safety_analysis)

// Where std::mutex can be made at compile time, so can this mutex, so that the process-wide one is
// ready before any static initializer runs.
#if defined(_WIN32)
#define FASTENERS_MUTEX_CONSTEXPR
#else
#define FASTENERS_MUTEX_CONSTEXPR constexpr
#endif

namespace fasteners::detail {

// std::mutex with annotations, so that Clang checks who holds it where (-Wthread-safety).
class FASTENERS_CAPABILITY("mutex") mutex {
 public:
  // A mutex made with `forever` is never destroyed, so that lock objects destroyed after static
  // destruction can still use a process-wide one.
  enum lifetime { scoped, forever };

  explicit FASTENERS_MUTEX_CONSTEXPR mutex(lifetime l = scoped) noexcept
      : mutex_(), forever_(l == forever) {}
  ~mutex() {
    if (!forever_) mutex_.~mutex();
  }
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  void lock() FASTENERS_ACQUIRE() { mutex_.lock(); }
  void unlock() FASTENERS_RELEASE() { mutex_.unlock(); }

  // Waits on `cv`, releasing the mutex meanwhile, until notified (or spuriously woken). Not a
  // cancellation point, as nothing in the library is (see platform::cancellation_off).
  void wait(std::condition_variable& cv) FASTENERS_REQUIRES(this) {
    const platform::cancellation_off no_cancel;
    std::unique_lock<std::mutex> lock(mutex_, std::adopt_lock);
    cv.wait(lock);
    lock.release();
  }
  // As wait(), but also returns at `until`.
  void wait_until(std::condition_variable& cv, std::chrono::steady_clock::time_point until)
      FASTENERS_REQUIRES(this) {
    const platform::cancellation_off no_cancel;
    std::unique_lock<std::mutex> lock(mutex_, std::adopt_lock);
    cv.wait_until(lock, until);
    lock.release();
  }

 private:
  union {
    std::mutex mutex_;
  };
  const bool forever_;
};

// Lets go of a held mutex for its scope, and takes it again at the end.
class FASTENERS_SCOPED_CAPABILITY mutex_unlock {
 public:
  explicit mutex_unlock(mutex& m) FASTENERS_RELEASE(m) : mutex_(m) { mutex_.unlock(); }
  ~mutex_unlock() FASTENERS_RELEASE() { mutex_.lock(); }
  mutex_unlock(const mutex_unlock&) = delete;
  mutex_unlock& operator=(const mutex_unlock&) = delete;

 private:
  mutex& mutex_;
};

// Holds a mutex for its scope.
class FASTENERS_SCOPED_CAPABILITY mutex_lock {
 public:
  explicit mutex_lock(mutex& m) FASTENERS_ACQUIRE(m) : mutex_(m) { mutex_.lock(); }
  ~mutex_lock() FASTENERS_RELEASE() { mutex_.unlock(); }
  mutex_lock(const mutex_lock&) = delete;
  mutex_lock& operator=(const mutex_lock&) = delete;

 private:
  mutex& mutex_;
};

}  // namespace fasteners::detail
