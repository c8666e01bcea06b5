// One lock file's state in this process: in-process exclusion, the OS lock and the kernel waits.
#include "inode_state.hpp"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <exception>
#include <new>
#include <thread>
#include <utility>

#include "error.hpp"
#include "gate_protocol.hpp"
#include "lock_object.hpp"
#include "object_mutex.hpp"
#include "thread_pool.hpp"

namespace fasteners::detail {

namespace {

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

std::uint64_t this_thread_token() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local std::uint64_t token = 0;  // Zero-initialized: no guard on each call.
  if (token == 0) token = next.fetch_add(1, std::memory_order_relaxed);
  return token;
}

inode_state::inode_state(os_file file, const platform::open_file& info)
    : id_(info.id),
      writable_(info.writable),
      generation_(os_file::generation()),
      idle_(std::move(file)) {}

inode_state::~inode_state() {
  lock_table::forget(*this);
  // The idle handle last: when it is the only one, closing it is the release (see drop()), and
  // the waiter of another process it wakes often runs on this CPU as soon as this thread blocks.
  spares_.clear();
  held_gate_.reset();
  held_.reset();
  idle_.reset();
  lock_table::closed(*this);
}

take_result inode_state::take(const lock_request& r, deadline until) {
  // A deadline already passed means one try, as try_once does.
  if (until != no_deadline && until != try_once && std::chrono::steady_clock::now() >= until) {
    until = try_once;
  }
  mutex_lock lock(mu_);
  if (r.mode == lock_mode::exclusive && !writable_) {
    throw_error(std::errc::permission_denied, "take a write lock on", r.path,
                "the file can only be opened for reading");
  }
  // A writer that may wait holds back the readers of this process from its start (see
  // next_step()), so that they cannot starve it.
  const bool counts = r.mode == lock_mode::exclusive && until != try_once;
  if (counts) ++writers_waiting_;
  take_result result = take_result::not_taken;
  bool rechecked = false;
  try {
    for (;;) {
      if (held_by_thread(this_thread_token())) {
        if (until == try_once) break;
        throw_error(std::errc::resource_deadlock_would_occur, "wait for a lock on", r.path,
                    "the calling thread already holds a lock on this file in this process");
      }
      if (!listed.load(std::memory_order_acquire)) {
        object_lock owner(r.owner.mu_);
        if (r.owner.holds_ == 0) {
          result = take_result::start_again;  // The file was deleted or replaced meanwhile.
          break;
        }
      }
      const step next = next_step(r.mode, until);
      if (next == step::join) {
        record({this_thread_token(), &r.owner, r.mode});
        result = take_result::taken;
        break;
      }
      if (next == step::request) {
        result = request(r, until);
        if (result == take_result::not_taken && until == try_once && !rechecked) {
          // A try that a grant to an abandoned wait of this process stood in the way of (it is
          // released at once) asks again once that wait has reported.
          if (const kernel_wait* w = queued_grant_in_the_way(r.mode)) {
            // Only compared from here on: once it has reported, its thread frees it.
            const auto& queued = pending_[slot(w->mode)];
            rechecked = true;
            const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            while (queued.get() == w && std::chrono::steady_clock::now() < limit) sleep(limit);
            continue;
          }
        }
        break;
      }
      if (!may_wait(until)) break;
      if (next == step::adopt) {
        result = adopt(r, *pending_[slot(r.mode)], until);
        break;
      }
      sleep(until);
    }
  } catch (...) {
    if (counts) --writers_waiting_;
    notify();
    throw;
  }
  if (counts) {
    --writers_waiting_;
    notify();
  }
  check_invariants();
  return result;
}

void inode_state::check_invariants() const {
#ifndef NDEBUG
  int readers = 0;
  int writers = 0;
  for (const auto& h : holdings_) ++(h.mode == lock_mode::shared ? readers : writers);
  assert(readers == readers_ && writers == (writer_ ? 1 : 0));
  assert(readers_ == 0 || !writer_);
  // The OS lock is held through held_ exactly while a lock is held here.
  assert(static_cast<bool>(held_) == (readers_ > 0 || writer_));
  assert(!held_gate_ || writer_);
  assert(writers_waiting_ >= 0 && sleepers_ >= 0);
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i]) assert(slot(pending_[i]->mode) == i);
  }
  // Where locks belong to the process, no kernel wait is ever queued (see request()).
  assert(platform::handles_own_locks() || (!pending_[0] && !pending_[1]));
#endif
}

inode_state::step inode_state::next_step(lock_mode mode, deadline until) {
  const auto& shared_wait = pending_[slot(lock_mode::shared)];
  const auto& exclusive_wait = pending_[slot(lock_mode::exclusive)];
  if (mode == lock_mode::exclusive) {
    if (writer_ || readers_ > 0 || os_busy_) return step::wait;
    // A try asks through a handle of its own, so a queued wait cannot stand in its way: the
    // lock is free for it exactly when it is free for another process.
    if (until == try_once) return step::request;
    if (shared_wait) return step::wait;
    if (exclusive_wait) return exclusive_wait->wanters.empty() ? step::adopt : step::wait;
    return step::request;
  }
  if (writer_ || writers_waiting_ > 0) return step::wait;
  if (readers_ > 0) {
    // Joining the shared lock this process holds must not overtake a writer elsewhere.
    if (!gate_closed_ && gate_protocol::writer_waiting(held_.get())) gate_closed_ = true;
    return gate_closed_ ? step::wait : step::join;
  }
  if (os_busy_) return step::wait;
  if (until == try_once) return step::request;
  if (shared_wait) return step::adopt;
  // A writer's wait that every caller gave up does not hold readers back: they ask through a
  // handle of their own.
  if (exclusive_wait && !exclusive_wait->wanters.empty()) return step::wait;
  return step::request;
}

const kernel_wait* inode_state::queued_grant_in_the_way(lock_mode mode) {
  // Asking through a handle that a waiting thread blocks on would wait for that thread here.
  if (platform::blocked_handle_is_busy()) return nullptr;
  for (const auto& w : pending_) {
    if (!w || !w->wanters.empty()) continue;
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

bool inode_state::held_by_thread(std::uint64_t thread) const {
  return std::any_of(holdings_.begin(), holdings_.end(),
                     [&](const holding& h) { return h.thread == thread; });
}

void inode_state::record(const holding& h) {
  assert(held_ && "a lock is recorded only while held_ holds the OS lock");
  holdings_.push_back(h);
  if (h.mode == lock_mode::shared) {
    ++readers_;
  } else {
    assert(readers_ == 0 && !writer_);
    writer_ = true;
  }
}

void inode_state::sleep(deadline until) {
  ++sleepers_;
  if (until == no_deadline) {
    mu_.wait(changed_);
  } else {
    mu_.wait_until(changed_, until);
  }
  --sleepers_;
}

void inode_state::notify() {
  if (sleepers_ > 0) changed_.notify_all();
}

take_result inode_state::request(const lock_request& r, deadline until) {
  assert(!held_ && readers_ == 0 && !writer_);
  os_file file = borrow_handle(r.path, r.follow_symlinks);
  if (!file) {
    mutex_lock table(table_mutex);
    lock_table::unlist(*this);
    return take_result::start_again;
  }
  bool taken = false;
  try {
    taken = gate_protocol::try_lock(file.get(), r.mode, r.path);
  } catch (...) {
    give_back(std::move(file));
    throw;
  }
  if (taken) {
    held_ = std::move(file);
    record({this_thread_token(), &r.owner, r.mode});
    return take_result::taken;
  }
  if (!may_wait(until)) {
    give_back(std::move(file));
    return take_result::not_taken;
  }
  // Process-owned locks (classic fcntl) cannot have a kernel wait queued beside other requests of
  // the process (see next_step()), so there a timed wait retries instead.
  if (until == no_deadline || !platform::handles_own_locks()) {
    return wait_here(r, std::move(file), until);
  }
  return start_wait(r, std::move(file), until);
}

take_result inode_state::wait_here(const lock_request& r, os_file file, deadline until) {
  os_busy_ = true;
  const auto handle = file.get();
  std::exception_ptr failure;
  bool taken = false;
  mu_.unlock();
  try {
    taken = until == no_deadline ? wait_blocking(handle, r.mode, r.path)
                                 : wait_polling(handle, r.mode, r.path, until);
  } catch (...) {
    failure = std::current_exception();
  }
  mu_.lock();
  os_busy_ = false;
  notify();
  if (failure || !taken) {
    give_back(std::move(file));
    if (failure) std::rethrow_exception(failure);
    return take_result::not_taken;
  }
  assert(!held_ && "while this thread waited, no other request of the process could succeed");
  held_ = std::move(file);
  record({this_thread_token(), &r.owner, r.mode});
  return take_result::taken;
}

take_result inode_state::start_wait(const lock_request& r, os_file file, deadline until) {
  auto owned = std::make_unique<kernel_wait>();
  kernel_wait& w = *owned;
  w.mode = r.mode;
  w.path = r.path;
  w.follow_symlinks = r.follow_symlinks;
  w.file = std::move(file);
  w.inode = shared_from_this();
  w.wanters.reserve(1);
  pending_[slot(r.mode)] = std::move(owned);
  if (const auto ec = run_on_pool_thread(&run_wait, &w)) {
    owned = std::move(pending_[slot(r.mode)]);
    give_back(std::move(owned->file));
    owned->inode.reset();  // Not the last reference: the caller holds one.
    throw_error(ec, "start a thread to wait for a lock on", r.path);
  }
  // The thread reports only under the mutex, which this thread holds until it waits.
  return adopt(r, w, until);
}

take_result inode_state::adopt(const lock_request& r, kernel_wait& w, deadline until) {
  wanter me;
  me.wants = {this_thread_token(), &r.owner, r.mode};
  w.wanters.push_back(&me);
  if (r.mode == lock_mode::exclusive && w.waiting_for_main && !w.gate_held) {
    // The writer that started this wait gave up its place at the gate; take it again if it is
    // free. Best effort: only the writer's priority over new readers depends on it.
    try {
      w.gate_held = gate_protocol::try_gate(w.file.get(), w.path);
    } catch (const std::system_error&) {
    }
  }
  return await(r, w, me, until);
}

take_result inode_state::await(const lock_request& r, kernel_wait& w, wanter& me, deadline until) {
  while (me.outcome == wanter::state::waiting) {
    if (!may_wait(until)) {
      give_up(w, me);
      return take_result::not_taken;
    }
    sleep(until);
  }
  // `w` may be gone now: its thread destroys it once it has reported.
  switch (me.outcome) {
    case wanter::state::granted:
      return take_result::taken;
    case wanter::state::start_again:
      return take_result::start_again;
    default:
      throw_error(me.error, "lock", r.path);
  }
}

void inode_state::give_up(kernel_wait& w, const wanter& me) {
  w.wanters.erase(std::find(w.wanters.begin(), w.wanters.end(), &me));
  if (w.wanters.empty() && w.gate_held && w.waiting_for_main) {
    // Nobody here waits any more: readers must not queue behind this wait. The wait itself stays
    // queued for the main region until granted (nothing else can end it) and is then released,
    // or taken by a later acquire that adopts it.
    gate_protocol::release_gate(w.file.get());
    w.gate_held = false;
  }
  notify();
}

os_file inode_state::borrow_handle(const std::filesystem::path& path, bool follow_symlinks) {
  if (idle_) return std::move(idle_);
  // The idle handle waits in the kernel for an abandoned writer. Process-owned locks never get
  // here (next_step() adopts), since closing this second handle would drop them.
  assert(platform::handles_own_locks());
  platform::open_file info;
  os_file file = os_file::open(path, follow_symlinks, info);
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

inode_state::dropped inode_state::drop(lock_object& owner, lock_mode mode, bool remove,
                                       const std::filesystem::path& path, long users) {
  mutex_lock lock(mu_);
  // One of the owner's locks of `mode`, the calling thread's if it took one.
  const auto self = this_thread_token();
  holding* it = nullptr;
  for (auto& h : holdings_) {
    if (h.owner != &owner || h.mode != mode) continue;
    it = &h;
    if (h.thread == self) break;
  }
  dropped result;
  if (it == nullptr) return result;
  result.found = true;
  holdings_.erase(it);
  if (mode == lock_mode::shared) {
    --readers_;
  } else {
    writer_ = false;
  }
  const bool last = readers_ == 0 && !writer_;
  bool closes = false;
  bool only_waits_left = false;
  {
    object_lock lock_owner(owner.mu_);
    --owner.holds_;
    if (owner.unbinds()) result.unbound = std::move(owner.bound_);
  }
  if (result.unbound && last) {
    // When nobody else can reach this state any more (no other reference, and none can be made
    // once it is unlisted), dropping the references closes the file, which releases the lock at
    // once: one call instead of two.
    mutex_lock table(table_mutex);
    only_waits_left = result.unbound.use_count() == users + 1 + queued_waits();
    closes =
        only_waits_left && queued_waits() == 0 && !os_busy_ && platform::closing_releases_locks();
    if (closes) lock_table::unlist(*this);
  }
  if (last) {
    gate_closed_ = false;
    if (remove && gate_protocol::remove_if_unused(held_.get(), mode, id_, path)) {
      mutex_lock table(table_mutex);
      lock_table::unlist(*this);
    }
    if (closes) {
      give_back(std::move(held_));
    } else {
      result.error = release_held();
      // Only queued waits keep this state now: no handle beyond theirs stays open.
      if (only_waits_left && queued_waits() > 0) idle_.reset();
    }
  }
  notify();
  check_invariants();
  return result;
}

bool inode_state::holds(const lock_object& owner, lock_mode mode) {
  mutex_lock lock(mu_);
  return std::any_of(holdings_.begin(), holdings_.end(),
                     [&](const holding& h) { return h.owner == &owner && h.mode == mode; });
}

bool inode_state::holds_any(const lock_object& owner) {
  mutex_lock lock(mu_);
  return std::any_of(holdings_.begin(), holdings_.end(),
                     [&](const holding& h) { return h.owner == &owner; });
}

platform::native_handle inode_state::handle_of(const lock_object& owner) {
  mutex_lock lock(mu_);
  const bool holds = std::any_of(holdings_.begin(), holdings_.end(),
                                 [&](const holding& h) { return h.owner == &owner; });
  return holds ? held_.get() : platform::invalid_handle;
}

void inode_state::close_idle_if_unused(long users) {
  mutex_lock lock(mu_);
  // Without queued waits the state goes with the caller's references, and the handle with it.
  // (Queued waits exist only where handles own their locks, so a handle opened again later
  // cannot drop a lock of this process when it is closed.)
  if (queued_waits() == 0) return;
  {
    mutex_lock table(table_mutex);
    if (weak_from_this().use_count() != users + queued_waits()) return;
  }
  if (readers_ == 0 && !writer_ && !os_busy_) idle_.reset();
}

void inode_state::keep_spare(os_file file) {
  mutex_lock lock(mu_);
  give_back(std::move(file));
}

void inode_state::run_wait(void* arg) {
  auto& w = *static_cast<kernel_wait*>(arg);
  const std::shared_ptr<inode_state> inode = std::move(w.inode);
  // Destroyed outside the mutex: closing its handles is a system call.
  inode->wait_in_kernel(w).reset();
  // `inode` goes last: it may be the last reference, which closes the file.
}

std::unique_ptr<kernel_wait> inode_state::wait_in_kernel(kernel_wait& w) {
  enum class end { granted, failed, replaced };
  auto outcome = end::granted;
  std::error_code error;
  // Only this thread changes `w.file` and `w.main_file` until it reports.
  const auto handle = w.file.get();
  try {
    if (w.mode == lock_mode::exclusive) {
      gate_protocol::wait_gate(handle, w.path);
      {
        mutex_lock lock(mu_);
        w.gate_held = true;
        if (w.wanters.empty()) {  // Every caller gave up.
          auto done = complete(w, {}, false);
          notify();
          return done;
        }
        w.waiting_for_main = true;
      }
      auto main = handle;
      if (platform::blocked_handle_is_busy()) {
        // The gate must stay free to let go of while this thread blocks: wait on another handle.
        platform::open_file info;
        os_file again = os_file::open(w.path, w.follow_symlinks, info);
        if (info.id != id_) {
          outcome = end::replaced;
        } else {
          main = again.get();
          mutex_lock lock(mu_);
          w.main_file = std::move(again);
        }
      }
      if (outcome == end::granted) gate_protocol::wait_main(main, lock_mode::exclusive, w.path);
    } else {
      gate_protocol::wait_main(handle, lock_mode::shared, w.path);
    }
  } catch (const std::system_error& e) {
    outcome = end::failed;
    error = e.code();
  } catch (const std::bad_alloc&) {
    outcome = end::failed;
    error = std::make_error_code(std::errc::not_enough_memory);
  }
  std::unique_ptr<kernel_wait> done;
  bool wake = false;
  {
    mutex_lock lock(mu_);
    if (outcome == end::replaced) {
      for (wanter* x : w.wanters) x->outcome = wanter::state::start_again;
      w.wanters.clear();
    }
    done = complete(w, error, outcome == end::granted);
    wake = sleepers_ > 0;
  }
  // Outside the mutex (closing its handles is a system call), and before the caller is woken:
  // the caller often runs on this CPU once this thread sleeps, so what this thread does after
  // waking it delays the hand-off.
  done.reset();
  // Outside the mutex too, so that the woken caller does not wait for it at once.
  if (wake) changed_.notify_all();
  return nullptr;
}

std::unique_ptr<kernel_wait> inode_state::complete(kernel_wait& w, std::error_code error,
                                                   bool granted) {
  auto done = std::move(pending_[slot(w.mode)]);
  assert(done.get() == &w);
  if (granted && !w.wanters.empty()) {
    hand_over(w);
  } else {
    auto& main = w.main_file ? w.main_file : w.file;
    if (granted) gate_protocol::release(main.get());
    if (w.gate_held) gate_protocol::release_gate(w.file.get());
    for (wanter* x : w.wanters) {
      x->outcome = wanter::state::failed;
      x->error = error;
    }
    give_back(std::move(w.main_file));
    give_back(std::move(w.file));
  }
  check_invariants();
  return done;
}

void inode_state::hand_over(kernel_wait& w) {
  auto& main = w.main_file ? w.main_file : w.file;
  if (held_) {
    // Readers of this process took the lock through another handle meanwhile (a try does): the
    // wanters join them, and this grant goes.
    assert(w.mode == lock_mode::shared && readers_ > 0);
    gate_protocol::release(main.get());
    give_back(std::move(w.file));
  } else {
    assert(readers_ == 0 && !writer_);
    held_ = std::move(main);
    if (w.main_file && w.gate_held) {
      held_gate_ = std::move(w.file);  // The gate, on a handle of its own.
    } else {
      give_back(std::move(w.file));
    }
  }
  for (wanter* x : w.wanters) {
    record(x->wants);
    x->outcome = wanter::state::granted;
  }
}

}  // namespace fasteners::detail
