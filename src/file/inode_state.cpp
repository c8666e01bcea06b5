// The lock-file backend: tries, waits and releases on one lock file's handles.
#include "file/inode_state.hpp"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include "error.hpp"
#include "file/file_object.hpp"
#include "file/gate_protocol.hpp"
#include "file/lock_table.hpp"

namespace fasteners::detail::file {
namespace {

using engine::outcome;

std::size_t slot(lock_mode mode) { return mode == lock_mode::shared ? 0 : 1; }

const file_object& file_of(const engine::lock_object& owner) {
  return static_cast<const file_object&>(owner);
}

// Takes the lock of `mode` through `handle`, blocking in the kernel as long as it takes.
bool wait_blocking(platform::native_handle handle, lock_mode mode,
                   const std::filesystem::path& path) {
  bool gate = false;
  try {
    if (mode == lock_mode::exclusive) {
      gate_protocol::wait_gate(handle, path);
      gate = true;
    }
    gate_protocol::wait_main(handle, mode, path);
  } catch (...) {
    if (gate) gate_protocol::release_gate(handle);
    throw;
  }
  return true;
}

// Takes the lock of `mode` through `handle`, retrying at intervals growing from 1 to 10 ms until
// `until`; a writer holds the gate meanwhile. Returns whether it took it.
bool wait_polling(platform::native_handle handle, lock_mode mode, const std::filesystem::path& path,
                  deadline until) {
  bool gate = false;
  try {
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      if (mode == lock_mode::exclusive && !gate) gate = gate_protocol::try_gate(handle, path);
      if ((mode == lock_mode::shared || gate) && gate_protocol::try_lock(handle, mode, path)) {
        return true;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) break;
      const platform::cancellation_off no_cancel;
      std::this_thread::sleep_for(
          std::min<std::chrono::steady_clock::duration>(pause, until - now));
      pause = std::min(pause * 2, std::chrono::milliseconds(10));
    }
  } catch (...) {
    if (gate) gate_protocol::release_gate(handle);
    throw;
  }
  if (gate) gate_protocol::release_gate(handle);
  return false;
}

}  // namespace

inode_state::inode_state(os_file file, const platform::open_file& info)
    : id_(info.id), writable_(info.writable), idle_(std::move(file)) {
  bind();  // For the object that opened the file.
}

inode_state::~inode_state() {
  // The idle handle last: when it is the only one, closing it is the release (see unlock()), and
  // the waiter of another process it wakes often runs on this CPU as soon as this thread blocks.
  spares_.clear();
  held_gate_.reset();
  held_.reset();
  idle_.reset();
  lock_table::closed(*this);
}

void inode_state::keep_spare(os_file file) {
  mutex_lock lock(mu_);
  give_back(std::move(file));
}

void inode_state::check_mode(lock_mode mode, const engine::lock_object& owner) {
  if (mode == lock_mode::exclusive && !writable_) {
    throw_error(std::errc::permission_denied, "take a write lock on", file_of(owner).path(),
                "the file can only be opened for reading");
  }
}

outcome inode_state::try_lock(engine::holder&, lock_mode mode, engine::lock_object& owner) {
  const auto& object = file_of(owner);
  for (bool rechecked = false;; rechecked = true) {
    os_file file = borrow_handle(object);
    if (!file) {
      replaced();
      return outcome::start_again;
    }
    bool taken = false;
    try {
      taken = gate_protocol::try_lock(file.get(), mode, object.path());
    } catch (...) {
      give_back(std::move(file));
      throw;
    }
    if (taken) {
      held_ = std::move(file);
      return confirm(object);
    }
    give_back(std::move(file));
    // A grant to an abandoned wait of this process (released at once) may have stood in the way:
    // ask again once that wait has reported.
    const kernel_wait* w = rechecked ? nullptr : queued_grant_in_the_way(mode);
    if (w == nullptr) return outcome::not_taken;
    // Only compared from here on: once it has reported, its thread frees it.
    const auto& queued = pending_[slot(w->mode)];
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (queued.get() == w && std::chrono::steady_clock::now() < limit) sleep(limit);
  }
}

outcome inode_state::wait_lock(engine::holder&, lock_mode mode, deadline until,
                               engine::lock_object& owner) {
  const auto& object = file_of(owner);
  // Process-owned locks (classic fcntl) cannot have a kernel wait queued beside other requests of
  // the process, so there a timed wait retries instead.
  if (until == no_deadline || !platform::handles_own_locks()) return wait_here(mode, until, object);
  return wait_timed(mode, until, object);
}

outcome inode_state::confirm(const file_object& owner) {
  if (!owner.options().remove_on_release || owner.still_at_path(id_)) return outcome::taken;
  // The holder deleted the file while this process waited for it: a lock on a file that nobody
  // can find any more excludes nobody.
  replaced();
  release_held();
  return outcome::start_again;
}

void inode_state::replaced() {
  if (!is_current()) return;  // Unlisted already.
  mark_replaced();
  lock_table::unlist(*this);
}

const kernel_wait* inode_state::queued_grant_in_the_way(lock_mode mode) {
  // Asking through a handle that a waiting thread blocks on would wait for that thread here.
  if (platform::blocked_handle_is_busy()) return nullptr;
  for (const auto& w : pending_) {
    if (!w || w->wanted_by != nullptr) continue;
    if (w->mode == lock_mode::shared && mode == lock_mode::shared) continue;
    // Seen from the wait's own handle, nobody else holds what the try asked for (a reader asks
    // for the gate too, which a writer elsewhere may hold while it waits): what stood in the way
    // was the wait's own grant.
    const auto asked =
        mode == lock_mode::shared ? platform::region::main_and_gate : platform::region::main;
    if (!platform::locked_elsewhere(w->file.get(), mode, asked)) return w.get();
  }
  return nullptr;
}

outcome inode_state::wait_here(lock_mode mode, deadline until, const file_object& owner) {
  os_file file = borrow_handle(owner);
  if (!file) {
    replaced();
    return outcome::start_again;
  }
  const auto handle = file.get();
  std::exception_ptr failure;
  bool taken = false;
  {
    const mutex_unlock unlocked(mu_);
    try {
      taken = until == no_deadline ? wait_blocking(handle, mode, owner.path())
                                   : wait_polling(handle, mode, owner.path(), until);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (failure || !taken) {
    give_back(std::move(file));
    if (failure) std::rethrow_exception(failure);
    return outcome::not_taken;
  }
  assert(!held_ && "while this thread waited, no other request of the process could succeed");
  held_ = std::move(file);
  return confirm(owner);
}

outcome inode_state::wait_timed(lock_mode mode, deadline until, const file_object& owner) {
  wanter me;
  kernel_wait* w = pending_[slot(mode)].get();
  if (w != nullptr) {
    adopt(*w, me);
  } else {
    os_file file = borrow_handle(owner);
    if (!file) {
      replaced();
      return outcome::start_again;
    }
    w = &start_kernel_wait(mode, std::move(file), owner);
    w->wanted_by = &me;
  }
  return await(*w, me, until, owner);
}

kernel_wait& inode_state::start_kernel_wait(lock_mode mode, os_file file,
                                            const file_object& owner) {
  auto& w = pending_[slot(mode)];
  w = std::make_unique<kernel_wait>();
  w->mode = mode;
  w->path = owner.path();
  w->follow_symlinks = owner.options().follow_symlinks;
  w->file = std::move(file);
  w->inode = shared_from_this();
  if (const auto ec = run_kernel_wait(*w)) {
    auto failed = std::move(w);
    give_back(std::move(failed->file));
    failed->inode.reset();  // Not the last reference: the caller's object holds one.
    throw_error(ec, "start a thread to wait for a lock on", owner.path());
  }
  bind();  // The wait keeps the state until it reports (complete()).
  // The thread reports only under the mutex, which this thread holds until it waits.
  return *w;
}

outcome inode_state::start_wait(engine::holder&, lock_mode mode, engine::lock_object& owner) {
  const auto& object = file_of(owner);
  async_wanter_.outcome = wanter::state::waiting;
  async_wanter_.error.clear();
  kernel_wait* w = pending_[slot(mode)].get();
  if (w != nullptr) {
    adopt(*w, async_wanter_);
  } else {
    os_file file = borrow_handle(object);
    if (!file) {
      replaced();
      return outcome::start_again;
    }
    w = &start_kernel_wait(mode, std::move(file), object);
    w->wanted_by = &async_wanter_;
  }
  async_wait_ = w;
  async_owner_ = &object;
  return outcome::not_taken;
}

bool inode_state::stop_wait(engine::holder&, engine::lock_object&) noexcept {
  if (async_wait_ == nullptr) return false;
  try {
    give_up(*async_wait_);
  } catch (...) {
    // Letting go of the gate failed: the wait keeps it until its grant, which is released.
  }
  async_wait_ = nullptr;
  async_owner_ = nullptr;
  return false;  // The kernel wait's thread lets go of a grant that comes anyway.
}

void inode_state::adopt(kernel_wait& w, wanter& me) {
  assert(w.wanted_by == nullptr && "one thread at a time calls the backend on the holder");
  w.wanted_by = &me;
  if (w.mode == lock_mode::exclusive && w.waiting_for_main && !w.gate_held) {
    // The writer that started this wait gave up its place at the gate; take it again if it is
    // free. Best effort: only the writer's priority over new readers depends on it.
    try {
      w.gate_held = gate_protocol::try_gate(w.file.get(), w.path);
    } catch (const std::system_error&) {
    }
  }
}

outcome inode_state::await(kernel_wait& w, wanter& me, deadline until, const file_object& owner) {
  bool woken = false;  // Whether the kernel wait's thread woke this one (after the outcome).
  while (me.outcome == wanter::state::waiting) {
    if (!may_wait(until)) {
      give_up(w);
      return outcome::not_taken;
    }
    const mutex_unlock unlocked(mu_);
    woken = me.parker.park(until);
  }
  if (!woken) {
    // Told, but not woken yet: the kernel wait's thread still uses `me` until it wakes it.
    const mutex_unlock unlocked(mu_);
    while (!me.parker.park(no_deadline)) {
    }
  }
  // `w` may be gone now: its thread destroys it once it has reported.
  switch (me.outcome) {
    case wanter::state::granted:
      return confirm(owner);
    case wanter::state::start_again:
      return outcome::start_again;
    default:
      throw_error(me.error, "lock", owner.path());
  }
}

void inode_state::give_up(kernel_wait& w) {
  w.wanted_by = nullptr;
  if (w.gate_held && w.waiting_for_main) {
    // Nobody here waits any more: readers must not queue behind this wait. The wait itself stays
    // queued for the main region until granted (nothing else can end it) and is then released,
    // or taken by a later acquire that adopts it.
    gate_protocol::release_gate(w.file.get());
    w.gate_held = false;
  }
}

bool inode_state::gate_taken(kernel_wait& w) {
  w.gate_held = true;
  w.waiting_for_main = w.wanted_by != nullptr;
  return w.waiting_for_main;
}

void inode_state::keep_main_handle(kernel_wait& w, os_file file) { w.main_file = std::move(file); }

inode_state::completed inode_state::complete(kernel_wait& w, wait_end end, std::error_code error) {
  completed done{std::move(pending_[slot(w.mode)]), w.wanted_by};
  assert(done.wait.get() == &w);
  if (end == wait_end::granted && w.wanted_by != nullptr) {
    hand_over(w);
  } else {
    auto& main = w.main_file ? w.main_file : w.file;
    if (end == wait_end::granted) gate_protocol::release(main.get());
    if (w.gate_held) gate_protocol::release_gate(w.file.get());
    if (w.wanted_by != nullptr) {
      // A wait found unwanted as it took the gate may have been adopted since: its caller asks
      // again.
      w.wanted_by->outcome =
          end == wait_end::failed ? wanter::state::failed : wanter::state::start_again;
      w.wanted_by->error = error;
    }
    give_back(std::move(w.main_file));
    give_back(std::move(w.file));
  }
  if (end == wait_end::replaced) replaced();
  unbind();  // The wait's own binding (start_kernel_wait()).
  if (done.told == &async_wanter_) {
    // An asynchronous acquisition's: the engine takes the outcome; nobody sleeps on the parker.
    done.told = nullptr;
    const file_object& owner = *async_owner_;
    async_wait_ = nullptr;
    async_owner_ = nullptr;
    switch (async_wanter_.outcome) {
      case wanter::state::granted:
        wait_ended(holder_, confirm(owner), nullptr);
        break;
      case wanter::state::failed:
        wait_ended(holder_, outcome::not_taken,
                   std::make_exception_ptr(std::system_error(async_wanter_.error)));
        break;
      default:
        wait_ended(holder_, outcome::start_again, nullptr);
        break;
    }
  }
  return done;
}

void inode_state::hand_over(kernel_wait& w) {
  assert(!held_ && "while a caller waits for a kernel wait, no other request of the process runs");
  if (w.main_file) {
    held_ = std::move(w.main_file);
    if (w.gate_held) {
      held_gate_ = std::move(w.file);  // The gate, on a handle of its own.
    } else {
      give_back(std::move(w.file));
    }
  } else {
    held_ = std::move(w.file);
  }
  w.wanted_by->outcome = wanter::state::granted;
}

std::exception_ptr inode_state::unlock(engine::holder&, lock_mode mode, engine::lock_object& owner,
                                       bool unbinding) {
  const auto& object = file_of(owner);
  if (object.options().remove_on_release &&
      gate_protocol::remove_if_unused(held_.get(), mode, id_, object.path())) {
    replaced();
  }
  // When nobody else can reach this state any more (no other binding, and none can be made once
  // it is unlisted), closing the file releases the lock at once: one call instead of two. The
  // close happens as the state is destroyed, after every mutex is let go.
  const bool closes =
      unbinding && bindings() == 1 && queued_waits() == 0 && platform::closing_releases_locks();
  if (closes) {
    replaced();
    give_back(std::move(held_));
    return nullptr;
  }
  const auto error = release_held();
  return error ? owner.failure(error, "release", "") : nullptr;
}

std::uint64_t inode_state::fence(engine::holder&, lock_mode mode, engine::lock_object& owner) {
  const auto& object = file_of(owner);
  if (mode == lock_mode::shared) return fence_.latest(object.path(), object.options());
  return fence_.advance(object.path(), object.options());
}

bool inode_state::writer_waiting_elsewhere(engine::holder&, const engine::lock_object&) {
  return gate_protocol::writer_waiting(held_.get());
}

bool inode_state::hold_back_readers(engine::holder&) {
  // The gate, beside the shared lock on the same handle: readers elsewhere wait at it, and a
  // holder elsewhere stops letting its readers join (writer_waiting_elsewhere()). A writer
  // elsewhere may hold it already, which holds them back as well.
  try {
    return gate_protocol::try_gate(held_.get(), "");
  } catch (const std::system_error&) {
    return false;
  }
}

void inode_state::let_readers_in(engine::holder&) noexcept {
  gate_protocol::release_gate(held_.get());
}

std::intptr_t inode_state::handle_of(engine::holder&, const engine::lock_object&) {
  return held_.get();
}

void inode_state::on_unbind() {
  if (bindings() == 0) {
    replaced();  // Unlisted: a new binding makes a new state.
    return;
  }
  // Only queued waits keep this state now: no handle beyond theirs stays open. (Queued waits
  // exist only where handles own their locks, so a handle opened again later cannot drop a lock
  // of this process when it is closed.)
  if (bindings() == queued_waits() && !held_ && holder_.busy == engine::holder::use::idle) {
    idle_.reset();
  }
}

os_file inode_state::borrow_handle(const file_object& owner) {
  if (idle_) return std::move(idle_);
  // The idle handle waits in the kernel for an abandoned wait, or was closed once only queued
  // waits kept the state. Process-owned locks never get here (they queue no waits), since closing
  // this second handle would drop them.
  assert(platform::handles_own_locks());
  platform::open_file info;
  os_file file = os_file::open(owner.path(), owner.options().follow_symlinks, info);
  if (info.id != id_) return {};
  return file;
}

void inode_state::give_back(os_file file) {
  if (!file) return;
  if (!idle_) {
    idle_ = std::move(file);
  } else if (!platform::handles_own_locks()) {
    spares_.push_back(std::move(file));
  }
  // Otherwise `file` is closed here; it holds nothing.
}

std::error_code inode_state::release_held() {
  const auto error = gate_protocol::release(held_.get());
  if (held_gate_) {
    gate_protocol::release(held_gate_.get());
    give_back(std::move(held_gate_));
  }
  give_back(std::move(held_));
  return error;
}

void inode_state::check_backend() const {
#ifndef NDEBUG
  // The file's one holder holds every lock of the state, through held_.
  assert(holder_.readers == holdings_of(lock_mode::shared));
  assert((holder_.writer ? 1 : 0) == holdings_of(lock_mode::exclusive));
  // A kernel wait hands its grant over through held_ before its caller, which waits with the
  // holder busy, records the lock.
  assert(static_cast<bool>(held_) == holder_.holds_any() ||
         (held_ && holder_.busy == engine::holder::use::waiting));
  assert(!held_gate_ || holder_.writer || holder_.busy == engine::holder::use::waiting);
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i]) assert(slot(pending_[i]->mode) == i);
  }
  // Where locks belong to the process, no kernel wait is ever queued (see wait_lock()).
  assert(platform::handles_own_locks() || (!pending_[0] && !pending_[1]));
  assert(bindings() >= queued_waits());
#endif
}

}  // namespace fasteners::detail::file
