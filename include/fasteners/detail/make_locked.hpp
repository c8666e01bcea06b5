// detail::make_locked: the body of the function wrappers (locked.hpp, postgres.hpp).
#pragma once

#include <functional>
#include <memory>
#include <utility>

namespace fasteners::detail {

// Returns a callable that holds a Guard on `*lock` around each call of `f`, forwarding its
// arguments and returning its result. Copies share the lock; `f` is called as const.
template <class Guard, class Lock, class F>
auto make_locked(std::shared_ptr<Lock> lock, F&& f) {
  return [lock = std::move(lock), f = std::forward<F>(f)](auto&&... args) -> decltype(auto) {
    Guard guard(*lock);
    return std::invoke(f, std::forward<decltype(args)>(args)...);
  };
}

}  // namespace fasteners::detail
