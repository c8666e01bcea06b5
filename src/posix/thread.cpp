// The POSIX platform's threads: the kernel waits' threads, cancellation and fork hooks.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <new>

#include "platform.hpp"

namespace fasteners::detail::platform {

std::error_code start_thread(void (*run)(void*), void* arg) noexcept {
  struct start {
    void (*run)(void*);
    void* arg;
  };
  auto* request = new (std::nothrow) start{run, arg};
  if (request == nullptr) return std::make_error_code(std::errc::not_enough_memory);
  const auto body = [](void* p) -> void* {
    const start s = *static_cast<start*>(p);
    delete static_cast<start*>(p);
    // Nobody outside the library knows this thread; nothing may cancel it halfway.
    ::pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
    s.run(s.arg);
    return nullptr;
  };
  // Every signal blocked, so the application's signals never land on this thread; a small stack,
  // so that many waits at once stay cheap.
  sigset_t all;
  sigset_t old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  ::pthread_attr_init(&attr);
  ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  ::pthread_attr_setstacksize(
      &attr, std::max<std::size_t>(static_cast<std::size_t>(PTHREAD_STACK_MIN), 64 * 1024));
  pthread_t thread;
  const int error = ::pthread_create(&thread, &attr, body, request);
  ::pthread_attr_destroy(&attr);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (error != 0) {
    delete request;
    return {error, std::system_category()};
  }
  return {};
}

cancellation_off::cancellation_off() noexcept {
  ::pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &saved_);
}

cancellation_off::~cancellation_off() { ::pthread_setcancelstate(saved_, nullptr); }

bool forks() noexcept { return true; }

void at_fork(void (*prepare)(), void (*parent)(), void (*child)()) {
  ::pthread_atfork(prepare, parent, child);
}

}  // namespace fasteners::detail::platform
