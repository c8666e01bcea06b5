// fasteners/asio.hpp: the asynchronous acquisitions as Asio operations, for any completion token.
#pragma once

// Header-only; standalone Asio by default, Boost.Asio with FASTENERS_ASIO_BOOST defined first.
//
//   asio::awaitable<void> serve(fasteners::interprocess_lock& lock) {
//     co_await fasteners::async_lock(lock, asio::use_awaitable);  // throws on failure
//     ... // the lock is held
//     lock.unlock();
//   }
//
// Every operation completes with `void(std::error_code)`:
// - std::error_code{}: the lock object now holds the lock; release it with unlock() (or
//   unlock_shared() after a shared form), from any thread.
// - Asio's error::operation_aborted (as a std::error_code, in Asio's category) after a
//   cancellation (per-operation cancellation of any type, through the handler's associated
//   cancellation slot) or when the lock object was destroyed first: compare with
//   asio::error::operation_aborted (Asio 1.22's category maps it to no std::errc condition). The
//   lock is then not held: a cancellation that arrives after the library granted the lock but
//   before the handler runs has the adapter release it, so that it is never leaked.
// - std::errc::timed_out when the deadline of a `_for` or `_until` form passed first; a
//   cancellation does not change this outcome.
// - Otherwise the code of what the blocking call would have thrown (std::errc::invalid_argument for
//   a NaN duration).
//
// The handler runs on its associated executor (asio::system_executor if it has none: then on a
// thread of the library), never inside the initiating call, and is invoked once its cancellation
// slot has been cleared; the operation keeps work outstanding on that executor while it waits and
// dispatches the completion with the handler's associated allocator. Cancellation signals must be
// emitted from the handler's executor (as for Asio's own operations); a `||` of awaitable
// operators, or a strand, does so. The lock object, and the execution context of the handler's
// executor, must outlive the operation (until the handler has run). A deferred operation starts
// when it is launched: a `_for` form's duration counts from then.
//
// Racing a timer with the awaitable operators (<asio/experimental/awaitable_operators.hpp>):
//
//   auto first = co_await (fasteners::async_lock(lock, asio::use_awaitable) ||
//                          timer.async_wait(asio::use_awaitable));
//   if (first.index() == 0) { ...; lock.unlock(); }  // the lock won: held
//   else { ... }                                      // the timer won: not held
//
// `||` cancels the loser and drops its outcome. Should the lock be granted just as the timer
// wins, the adapter releases it and the lock branch completes with operation_aborted, so that no
// lock is held unseen. That holds when the handler's executor runs one handler at a time (an
// io_context run by one thread, or a strand); with coroutines on several threads at once, check
// lock.acquired() after a lost race and unlock() if it is held.
//
// With Boost.Asio the completion is still `void(std::error_code)`, which Boost.Asio's use_awaitable
// and use_future do not take for their error code: they hand it over as a value, to be checked,
// where with standalone Asio (whose error_code is std::error_code) they throw std::system_error.

#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

#if defined(FASTENERS_ASIO_BOOST)
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/version.hpp>
#if BOOST_VERSION < 107700
#error "fasteners/asio.hpp needs Boost.Asio 1.77 or later (per-operation cancellation)"
#endif
#else
#include <asio/associated_allocator.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>
#include <asio/version.hpp>
#if ASIO_VERSION < 101900
#error "fasteners/asio.hpp needs Asio 1.19 or later (per-operation cancellation)"
#endif
#endif

#include "fasteners/async.hpp"

namespace fasteners {
namespace detail::asio_adapter {

#if defined(FASTENERS_ASIO_BOOST)
namespace net = ::boost::asio;
#else
namespace net = ::asio;
#endif

// Asio's code for `e`, as a std::error_code.
template <class Enum>
std::error_code std_code(Enum e) noexcept {
#if defined(FASTENERS_ASIO_BOOST)
  return std::error_code(::boost::system::error_code(e));
#else
  return std::error_code(e);  // In Asio's own system category.
#endif
}

// The outcome as the handler gets it: a cancellation as Asio's own operations report theirs.
inline std::error_code asio_code(std::error_code ec) noexcept {
  if (ec == std::errc::operation_canceled) return std_code(net::error::operation_aborted);
  return ec;
}

// The deadline of async_lock and async_lock_shared.
struct no_deadline {};

// A handler type, to name what the members return.
struct any_handler {
  void operator()(std::error_code) const {}
};

// The members of the exclusive (write) side and of the shared (read) side.
struct exclusive_side {
  template <class Lock, class Handler>
  static auto start(Lock& lock, no_deadline, Handler&& handler) {
    return lock.async_lock(std::forward<Handler>(handler));
  }
  template <class Lock, class Rep, class Period, class Handler>
  static auto start(Lock& lock, const std::chrono::duration<Rep, Period>& d, Handler&& handler) {
    return lock.async_try_lock_for(d, std::forward<Handler>(handler));
  }
  template <class Lock, class Clock, class Duration, class Handler>
  static auto start(Lock& lock, const std::chrono::time_point<Clock, Duration>& t,
                    Handler&& handler) {
    return lock.async_try_lock_until(t, std::forward<Handler>(handler));
  }
  template <class Lock>
  static void release(Lock& lock) {
    lock.unlock();
  }
};

struct shared_side {
  template <class Lock, class Handler>
  static auto start(Lock& lock, no_deadline, Handler&& handler) {
    return lock.async_lock_shared(std::forward<Handler>(handler));
  }
  template <class Lock, class Rep, class Period, class Handler>
  static auto start(Lock& lock, const std::chrono::duration<Rep, Period>& d, Handler&& handler) {
    return lock.async_try_lock_shared_for(d, std::forward<Handler>(handler));
  }
  template <class Lock, class Clock, class Duration, class Handler>
  static auto start(Lock& lock, const std::chrono::time_point<Clock, Duration>& t,
                    Handler&& handler) {
    return lock.async_try_lock_shared_until(t, std::forward<Handler>(handler));
  }
  template <class Lock>
  static void release(Lock& lock) {
    lock.unlock_shared();
  }
};

// One operation: the handler, the work it keeps outstanding, and what its completion and its
// cancellation share. Owned by the library's handler (while the library decides), the
// completion on its way to the executor, and the cancellation handler in the slot.
template <class Side, class Lock, class Deadline, class Handler>
class operation {
  using executor_type = net::associated_executor_t<Handler, net::system_executor>;
  using allocator_type = net::associated_allocator_t<Handler>;
  using acquisition_type =
      decltype(Side::start(std::declval<Lock&>(), std::declval<const Deadline&>(), any_handler{}));

 public:
  operation(Lock& lock, Handler&& handler)
      : lock_(lock),
        work_(net::make_work_guard(net::get_associated_executor(handler, net::system_executor()))),
        allocator_(net::get_associated_allocator(handler)),
        handler_(std::move(handler)) {}

  // Starts the acquisition of `self`.
  static void start(const std::shared_ptr<operation>& self, const Deadline& deadline) {
    operation& op = *self;
    net::cancellation_slot slot = net::get_associated_cancellation_slot(op.handler_);
    if (slot.is_connected()) {
      op.slot_ = slot;
      slot.template emplace<cancellation>(self);
    }
    std::error_code failed;
    try {
      acquisition_type acquisition = Side::start(op.lock_, deadline, library_handler{self});
      bool cancel_now = false;
      {
        std::lock_guard<std::mutex> guard(op.mutex_);
        op.acquisition_.emplace(std::move(acquisition));
        cancel_now = op.cancel_requested_;
      }
      // A cancellation that came while the library was starting the acquisition.
      if (cancel_now) op.acquisition_->cancel();
      return;
    } catch (const std::system_error& e) {
      failed = e.code();
    } catch (const std::invalid_argument&) {
      failed = std::make_error_code(std::errc::invalid_argument);
    } catch (...) {
      if (op.slot_.is_connected()) op.slot_.clear();
      throw;
    }
    // Nothing started: the failure is delivered as the outcome, never inside this call.
    net::post(op.work_.get_executor(), completion{self, failed});
  }

 private:
  // What the library calls, on a thread of its own, with the outcome.
  struct library_handler {
    explicit library_handler(std::shared_ptr<operation> op) noexcept : self(std::move(op)) {}
    std::shared_ptr<operation> self;
    void operator()(std::error_code ec) {
      auto executor = self->work_.get_executor();
      // Work of this thread's own until dispatch() has returned: Asio may still signal the
      // execution context after queueing the completion, and the context must not run out of
      // work, and be destroyed, before then.
      auto busy = net::make_work_guard(executor);
      net::dispatch(executor, completion{std::move(self), ec});
    }
  };

  // The completion, on the handler's executor.
  struct completion {
    using allocator_type = typename operation::allocator_type;
    completion(std::shared_ptr<operation> op, std::error_code outcome) noexcept
        : self(std::move(op)), ec(outcome) {}
    allocator_type get_allocator() const noexcept { return self->allocator_; }
    std::shared_ptr<operation> self;
    std::error_code ec;
    void operator()() { operation::complete(std::move(self), ec); }
  };

  // The handler in the cancellation slot. It runs on the thread that emits the signal, perhaps
  // while the library decides on another.
  struct cancellation {
    explicit cancellation(std::shared_ptr<operation> op) noexcept : self(std::move(op)) {}
    std::shared_ptr<operation> self;
    void operator()(net::cancellation_type_t type) {
      const auto honoured = net::cancellation_type::terminal | net::cancellation_type::partial |
                            net::cancellation_type::total;
      if ((type & honoured) == net::cancellation_type::none) return;
      bool started = false;
      {
        std::lock_guard<std::mutex> guard(self->mutex_);
        self->cancel_requested_ = true;
        started = self->acquisition_.has_value();
      }
      // Written once before `started`, only read since; cancel() is called without the mutex so
      // that the library may run the handler meanwhile. False if the outcome is already decided:
      // complete() then sees cancel_requested_.
      if (started) self->acquisition_->cancel();
    }
  };

  static void complete(std::shared_ptr<operation> self, std::error_code ec) {
    operation& op = *self;
    bool cancel_requested = false;
    {
      std::lock_guard<std::mutex> guard(op.mutex_);
      cancel_requested = op.cancel_requested_;
    }
    if (cancel_requested && !ec) {
      // Granted, but cancelled before the handler ran: give the lock back rather than leak it.
      try {
        Side::release(op.lock_);
        ec = std::make_error_code(std::errc::operation_canceled);
      } catch (const std::system_error& e) {
        ec = e.code();
      } catch (...) {
        ec = std::make_error_code(std::errc::state_not_recoverable);
      }
    }
    // No cancellation reaches the operation once its handler runs.
    if (op.slot_.is_connected()) op.slot_.clear();
    Handler handler(std::move(op.handler_));
    auto work = std::move(op.work_);
    self.reset();
    std::move(handler)(asio_code(ec));
  }

  Lock& lock_;
  net::executor_work_guard<executor_type> work_;
  allocator_type allocator_;
  Handler handler_;
  net::cancellation_slot slot_;
  std::mutex mutex_;
  bool cancel_requested_ = false;                // guarded by mutex_
  std::optional<acquisition_type> acquisition_;  // set once, under mutex_
};

// The initiation of every operation: the lock object and which side of it.
template <class Side, class Lock>
class initiation {
 public:
  explicit initiation(Lock& lock) noexcept : lock_(&lock) {}
  template <class Handler, class Deadline>
  void operator()(Handler&& handler, const Deadline& deadline) const {
    using op = operation<Side, Lock, Deadline, std::decay_t<Handler>>;
    op::start(std::make_shared<op>(*lock_, std::forward<Handler>(handler)), deadline);
  }

 private:
  Lock* lock_;
};

template <class Side, class Lock, class CompletionToken, class Deadline>
auto initiate(Lock& lock, CompletionToken&& token, const Deadline& deadline) {
  return net::async_initiate<CompletionToken, void(std::error_code)>(initiation<Side, Lock>(lock),
                                                                     token, deadline);
}

}  // namespace detail::asio_adapter

// Waits for `lock` (interprocess_lock, postgres_lock, or the write side of a reader-writer lock)
// and completes `token` with `void(std::error_code)`: success when `lock` holds it. See above for
// the outcomes, the executor and cancellation.
template <class Lock, class CompletionToken>
auto async_lock(Lock& lock, CompletionToken&& token) {
  return detail::asio_adapter::initiate<detail::asio_adapter::exclusive_side>(
      lock, std::forward<CompletionToken>(token), detail::asio_adapter::no_deadline{});
}

// As async_lock, for a read lock of a reader-writer lock (released with unlock_shared()).
template <class Lock, class CompletionToken>
auto async_lock_shared(Lock& lock, CompletionToken&& token) {
  return detail::asio_adapter::initiate<detail::asio_adapter::shared_side>(
      lock, std::forward<CompletionToken>(token), detail::asio_adapter::no_deadline{});
}

// As async_lock, waiting at most `d` (counted from the start of the operation; zero or less: one
// try): completes with timed_out if the lock was not taken by then.
template <class Lock, class Rep, class Period, class CompletionToken>
auto async_try_lock_for(Lock& lock, const std::chrono::duration<Rep, Period>& d,
                        CompletionToken&& token) {
  return detail::asio_adapter::initiate<detail::asio_adapter::exclusive_side>(
      lock, std::forward<CompletionToken>(token), d);
}

// As async_lock_shared, waiting at most `d`.
template <class Lock, class Rep, class Period, class CompletionToken>
auto async_try_lock_shared_for(Lock& lock, const std::chrono::duration<Rep, Period>& d,
                               CompletionToken&& token) {
  return detail::asio_adapter::initiate<detail::asio_adapter::shared_side>(
      lock, std::forward<CompletionToken>(token), d);
}

// As async_lock, waiting until `t` on `Clock` at most (a past time: one try).
template <class Lock, class Clock, class Duration, class CompletionToken>
auto async_try_lock_until(Lock& lock, const std::chrono::time_point<Clock, Duration>& t,
                          CompletionToken&& token) {
  return detail::asio_adapter::initiate<detail::asio_adapter::exclusive_side>(
      lock, std::forward<CompletionToken>(token), t);
}

// As async_lock_shared, waiting until `t` on `Clock` at most.
template <class Lock, class Clock, class Duration, class CompletionToken>
auto async_try_lock_shared_until(Lock& lock, const std::chrono::time_point<Clock, Duration>& t,
                                 CompletionToken&& token) {
  return detail::asio_adapter::initiate<detail::asio_adapter::shared_side>(
      lock, std::forward<CompletionToken>(token), t);
}

}  // namespace fasteners
