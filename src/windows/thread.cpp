// The Windows platform's threads: the kernel waits' threads; no cancellation, no fork.
#include <new>

#include "platform.hpp"
#include "windows/windows.hpp"

namespace fasteners::detail::platform {

std::error_code start_thread(void (*run)(void*), void* arg) noexcept {
  struct start {
    void (*run)(void*);
    void* arg;
  };
  auto* request = new (std::nothrow) start{run, arg};
  if (request == nullptr) return std::make_error_code(std::errc::not_enough_memory);
  const auto body = [](void* p) -> DWORD {
    const start s = *static_cast<start*>(p);
    delete static_cast<start*>(p);
    s.run(s.arg);
    return 0;
  };
  // A small stack, so that many waits at once stay cheap.
  const HANDLE thread =
      ::CreateThread(nullptr, 64 * 1024, body, request, STACK_SIZE_PARAM_IS_A_RESERVATION, nullptr);
  if (thread == nullptr) {
    const auto error = last_error();
    delete request;
    return error;
  }
  ::CloseHandle(thread);
  return {};
}

cancellation_off::cancellation_off() noexcept = default;

cancellation_off::~cancellation_off() = default;

bool forks() noexcept { return false; }

void at_fork(void (*)(), void (*)(), void (*)()) {}

}  // namespace fasteners::detail::platform
