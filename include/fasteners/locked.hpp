// Function wrappers that run a callable under an inter-process lock (python-fasteners' decorators).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "fasteners/interprocess_lock.hpp"
#include "fasteners/interprocess_reader_writer_lock.hpp"

namespace fasteners {
namespace detail {

template <class Lock, class Guard, class F>
auto make_locked(std::filesystem::path path, F&& f) {
  auto lock = std::make_shared<Lock>(std::move(path));
  return [lock = std::move(lock), f = std::forward<F>(f)](auto&&... args) -> decltype(auto) {
    Guard guard(*lock);
    return std::invoke(f, std::forward<decltype(args)>(args)...);
  };
}

}  // namespace detail

// Returns a callable that takes the exclusive lock on `path` (waiting as long as needed), calls
// `f` with its arguments, releases the lock and returns f's result or propagates its exception.
// The callable may be copied and called from many threads at once; all copies share one lock
// object, and `f` is called as const. Acquisition errors propagate as from
// interprocess_lock::lock(); a recursive call throws std::errc::resource_deadlock_would_occur.
template <class F>
auto interprocess_locked(std::filesystem::path path, F&& f) {
  return detail::make_locked<interprocess_lock, std::lock_guard<interprocess_lock>>(
      std::move(path), std::forward<F>(f));
}

// As interprocess_locked, with a read (shared) lock of an interprocess_reader_writer_lock.
template <class F>
auto interprocess_read_locked(std::filesystem::path path, F&& f) {
  return detail::make_locked<interprocess_reader_writer_lock,
                             std::shared_lock<interprocess_reader_writer_lock>>(std::move(path),
                                                                                std::forward<F>(f));
}

// As interprocess_locked, with the write (exclusive) lock of an interprocess_reader_writer_lock.
template <class F>
auto interprocess_write_locked(std::filesystem::path path, F&& f) {
  return detail::make_locked<interprocess_reader_writer_lock,
                             std::lock_guard<interprocess_reader_writer_lock>>(std::move(path),
                                                                               std::forward<F>(f));
}

}  // namespace fasteners
