// fasteners::async_acquisition: an acquisition that waits without blocking the calling thread.
#pragma once

#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>

#include "fasteners/detail/export.hpp"

namespace fasteners {
namespace detail {

class async_request;  // Defined in src/engine/async_request.hpp.

// A move-only callable taking std::error_code, called at most once (as an rvalue).
class async_handler {
 public:
  async_handler() noexcept = default;
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, async_handler>>>
  explicit async_handler(F&& f)
      : impl_(std::make_unique<model<std::decay_t<F>>>(std::forward<F>(f))) {
    static_assert(std::is_invocable_v<std::decay_t<F>&&, std::error_code>,
                  "fasteners: an asynchronous acquisition's handler takes a std::error_code");
  }
  explicit operator bool() const noexcept { return impl_ != nullptr; }
  // Calls the callable, which is then destroyed.
  void operator()(std::error_code ec) {
    auto impl = std::move(impl_);
    impl->call(ec);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual void call(std::error_code ec) = 0;
  };
  template <class F>
  struct model final : base {
    explicit model(F&& f) : f_(std::move(f)) {}
    explicit model(const F& f) : f_(f) {}
    void call(std::error_code ec) override { std::move(f_)(ec); }
    F f_;
  };
  std::unique_ptr<base> impl_;
};

}  // namespace detail

// A pending asynchronous acquisition, as returned by async_lock() and its kin. Movable, not
// copyable. Destroying it neither cancels nor waits: the acquisition goes on, and its handler runs.
//
// The handler runs exactly once, never inside the initiating call, on a thread of the library,
// with no mutex of the library held: std::error_code{} when the object holds the lock (to be
// released with unlock() or unlock_shared() from any thread), std::errc::timed_out when the
// deadline passed first (never early), std::errc::operation_canceled after cancel() or when the
// lock object was destroyed first, or the error code of what the blocking call would have thrown.
class FASTENERS_API async_acquisition {
 public:
  async_acquisition() noexcept = default;
  explicit async_acquisition(std::weak_ptr<detail::async_request> request) noexcept
      : request_(std::move(request)) {}
  async_acquisition(async_acquisition&&) noexcept = default;
  async_acquisition& operator=(async_acquisition&&) noexcept = default;
  async_acquisition(const async_acquisition&) = delete;
  async_acquisition& operator=(const async_acquisition&) = delete;
  ~async_acquisition() = default;

  // Ends the acquisition if its outcome is not decided yet: its handler then runs with
  // std::errc::operation_canceled, and the lock is not held. Returns false if the outcome was
  // already decided (the handler runs, or ran, with that outcome), or if there is none. Never
  // blocks on the lock.
  bool cancel() noexcept;

 private:
  std::weak_ptr<detail::async_request> request_;
};

}  // namespace fasteners
