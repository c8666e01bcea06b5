// The body of a kernel wait's thread: wait for the gate and the lock, then report to the file.
#include "file/kernel_wait.hpp"

#include <new>

#include "engine/async_thread.hpp"
#include "engine/thread_pool.hpp"
#include "file/gate_protocol.hpp"
#include "file/inode_state.hpp"

namespace fasteners::detail::file {
namespace {

// A writer's wait past the gate: the handle it waits on for the main region. Where a call on a
// handle waits while another thread blocks on it (Windows), that is the file opened again, so that
// the gate stays free to let go of. Nothing if the path names another file now.
platform::native_handle main_handle(kernel_wait& w) {
  if (!platform::blocked_handle_is_busy()) return w.file.get();
  platform::open_file info;
  os_file again = os_file::open(w.path, w.follow_symlinks, info);
  const auto handle = again.get();
  mutex_lock lock(w.inode->state_mutex());
  if (info.id != w.inode->id()) return platform::invalid_handle;
  w.inode->keep_main_handle(w, std::move(again));
  return handle;
}

// Waits in the kernel for `w`; returns how it ended.
wait_end wait_for(kernel_wait& w) {
  // Only this thread changes `w.file` and `w.main_file` until it reports.
  if (w.mode == lock_mode::shared) {
    gate_protocol::wait_main(w.file.get(), lock_mode::shared, w.path);
    return wait_end::granted;
  }
  gate_protocol::wait_gate(w.file.get(), w.path);
  {
    mutex_lock lock(w.inode->state_mutex());
    if (!w.inode->gate_taken(w)) return wait_end::unwanted;  // Every caller gave up.
  }
  const auto main = main_handle(w);
  if (main == platform::invalid_handle) return wait_end::replaced;
  gate_protocol::wait_main(main, lock_mode::exclusive, w.path);
  return wait_end::granted;
}

void run(void* arg) {
  auto& w = *static_cast<kernel_wait*>(arg);
  const std::shared_ptr<inode_state> inode = w.inode;
  auto end = wait_end::granted;
  std::error_code error;
  try {
    end = wait_for(w);
  } catch (const std::system_error& e) {
    end = wait_end::failed;
    error = e.code();
  } catch (const std::bad_alloc&) {
    end = wait_end::failed;
    error = std::make_error_code(std::errc::not_enough_memory);
  }
  inode_state::completed done;
  bool wake = false;
  // A grant to an asynchronous acquisition: this thread runs its handler itself, once it holds no
  // mutex, instead of waking the async thread for it.
  engine::async_thread::collector handlers;
  {
    mutex_lock lock(inode->state_mutex());
    done = inode->complete(w, end, error);
    wake = inode->waiters_sleep();
  }
  // Outside the mutex (closing its handles is a system call), and before the caller is woken: the
  // caller often runs on this CPU once this thread sleeps, so what this thread does after waking
  // it delays the hand-off.
  done.wait.reset();
  // Outside the mutex too, so that the woken caller does not wait for it at once. Threads that
  // sleep in memory (a try that waits for this wait to report) are woken as well.
  if (wake) inode->wake_waiters();
  if (done.told != nullptr) done.told->parker.unpark();
  handlers.run();
  // `inode` goes last: it may be the last reference, which closes the file.
}

}  // namespace

std::error_code run_kernel_wait(kernel_wait& w) noexcept {
  return engine::run_on_pool_thread(&run, &w);
}

}  // namespace fasteners::detail::file
