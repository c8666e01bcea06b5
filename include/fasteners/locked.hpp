// Function wrappers that run a callable under an inter-process lock (python-fasteners' decorators).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "fasteners/detail/make_locked.hpp"
#include "fasteners/interprocess_lock.hpp"
#include "fasteners/interprocess_reader_writer_lock.hpp"

namespace fasteners {

// Returns a callable that takes the exclusive lock on `path` (waiting as long as needed), calls
// `f` with its arguments, releases the lock and returns f's result or propagates its exception.
// The callable may be copied and called from many threads at once; all copies share one lock
// object, and `f` is called as const. Acquisition errors propagate as from
// interprocess_lock::lock(); a recursive call throws std::errc::resource_deadlock_would_occur.
template <class F>
auto interprocess_locked(std::filesystem::path path, F&& f) {
  return detail::make_locked<std::lock_guard<interprocess_lock>>(
      std::make_shared<interprocess_lock>(std::move(path)), std::forward<F>(f));
}

// As interprocess_locked, with a read (shared) lock of an interprocess_reader_writer_lock.
template <class F>
auto interprocess_read_locked(std::filesystem::path path, F&& f) {
  return detail::make_locked<std::shared_lock<interprocess_reader_writer_lock>>(
      std::make_shared<interprocess_reader_writer_lock>(std::move(path)), std::forward<F>(f));
}

// As interprocess_locked, with the write (exclusive) lock of an interprocess_reader_writer_lock.
template <class F>
auto interprocess_write_locked(std::filesystem::path path, F&& f) {
  return detail::make_locked<std::lock_guard<interprocess_reader_writer_lock>>(
      std::make_shared<interprocess_reader_writer_lock>(std::move(path)), std::forward<F>(f));
}

}  // namespace fasteners
