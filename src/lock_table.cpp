// The process-wide table of open lock files: in-process exclusion, deadlock checks, fork safety.
#include "lock_table.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "error.hpp"

namespace fasteners::detail {

// Names the calling thread for the whole life of the process. std::thread::id values are reused
// once a thread ends, and a thread that took a lock may end while the lock stays held by its
// object: a new thread with the old id must not be taken for the holder.
std::uint64_t this_thread_token() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t token = next.fetch_add(1, std::memory_order_relaxed);
  return token;
}

struct holding {
  std::uint64_t thread;  // this_thread_token() of the taker; the lock belongs to `owner`.
  const lock_object* owner;
  lock_mode mode;
};

struct inode_entry {
  platform::open_file file;
  // Later opens of the same file. Closing one while a classic fcntl lock is held would drop it,
  // so they stay open as long as the entry.
  std::vector<platform::native_handle> spare_handles;
  int users = 0;         // Acquires under way plus lock objects bound to this entry.
  int readers = 0;       // Read locks held in this process; the OS lock is shared while > 0.
  bool writer = false;   // A write lock is held in this process; the OS lock is exclusive.
  bool os_busy = false;  // A thread is taking the OS lock; others wait until it is done.
  int writers_waiting = 0;
  // A writer of another process waits at the gate: readers of this process stop joining the
  // shared lock it holds, so that it runs out and the writer gets in.
  bool gate_closed = false;
  bool listed = true;     // In the table; unlisted once the file is deleted or after fork().
  bool orphaned = false;  // Left over in a child after fork(): its handles are closed.
  int sleepers = 0;       // Threads waiting on `changed`.
  std::condition_variable changed;
  std::vector<holding> holdings;

  // Wakes the threads waiting for this entry to change, if there are any; a release or grant
  // that nobody in this process waits for stays clear of the condition variable.
  void notify() {
    if (sleepers > 0) changed.notify_all();
  }
};

struct lock_table {
  std::mutex mutex;
  std::map<platform::file_identity, std::shared_ptr<inode_entry>> entries;

  // The one table of the process, never destroyed: objects may outlive static destruction.
  static lock_table& get() {
    static lock_table* const table = [] {
      auto* t = new lock_table;
      platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
      return t;
    }();
    return *table;
  }

  // The entry of the file at `object`'s path, opening the file if no object of this process has
  // it open. The caller owns one use of it, to give back with release_use().
  std::shared_ptr<inode_entry> find_or_open(const lock_object& object) {
    const auto& path = object.path_;
    if (path.empty()) throw_error(std::errc::invalid_argument, "lock", path, "the path is empty");
    if (path.native().find(std::filesystem::path::value_type()) != path.native().npos) {
      throw_error(std::errc::invalid_argument, "lock", path, "the path contains a NUL character");
    }
    // With files open already, look for this one before opening it again: a second open and
    // close of a file would drop the classic fcntl locks this process holds on it.
    std::shared_ptr<inode_entry> entry;
    const auto id =
        entries.empty() ? std::nullopt : platform::identify(path, object.options_.follow_symlinks);
    if (id) {
      const auto it = entries.find(*id);
      if (it != entries.end()) entry = it->second;
    }
    if (!entry) {
      const auto file = platform::open(path, object.options_.follow_symlinks);
      auto& slot = entries[file.id];
      if (slot) {
        slot->spare_handles.push_back(file.handle);
      } else {
        slot = std::make_shared<inode_entry>();
        slot->file = file;
        // Allocated now, so that a waiter granted the lock records it without calling malloc.
        slot->holdings.reserve(4);
      }
      entry = slot;
    }
    ++entry->users;
    return entry;
  }

  // Gives back one use of `entry`; the last one closes the file.
  void release_use(std::shared_ptr<inode_entry> entry) noexcept {
    if (--entry->users > 0 || entry->orphaned) return;
    unlist(*entry);
    for (const auto handle : entry->spare_handles) platform::close(handle);
    const auto handle = entry->file.handle;
    entry.reset();
    // Last: closing may drop the lock and wake a waiter of another process, which often runs on
    // this CPU as soon as this thread blocks, so the work after it delays the hand-off.
    platform::close(handle);
  }

  void unbind(lock_object& object) noexcept { release_use(std::move(object.entry_)); }

  // Makes later binds open the file at the path anew.
  void unlist(inode_entry& entry) noexcept {
    if (!entry.listed) return;
    entry.listed = false;
    entries.erase(entry.file.id);
  }

  // Forgets what `object` held before this process was forked from its parent.
  static void forget_if_stale(lock_object& object) noexcept {
    if (object.entry_ && object.entry_->orphaned) {
      object.entry_.reset();
      object.holds_ = 0;
    }
  }

  // Whether a lock of `mode` may be taken now. A reader that would join the shared lock this
  // process holds asks the OS whether a writer elsewhere waits: it must not overtake that writer.
  static bool can_take(inode_entry& e, lock_mode mode) {
    if (e.writer || e.os_busy) return false;
    if (mode == lock_mode::exclusive) return e.readers == 0;
    // Readers of this process queue behind its waiting writers, so they cannot starve them.
    if (e.writers_waiting > 0 || e.gate_closed) return false;
    if (e.readers > 0 && platform::writer_waiting(e.file.handle)) e.gate_closed = true;
    return !e.gate_closed;
  }

  // start_again: the file was deleted or replaced, or another thread bound the object to another
  // file meanwhile; the acquire looks the path up again.
  enum class outcome { taken, not_taken, start_again };

  // Waits until `object` may take a lock of `mode` on `e`, then takes it. Called with `guard`
  // locked.
  outcome wait_and_take(lock_object& object, inode_entry& e, lock_mode mode,
                        platform::deadline until, std::unique_lock<std::mutex>& guard) {
    const auto bound_elsewhere = [&] { return object.entry_ && object.entry_.get() != &e; };
    const auto self = this_thread_token();
    for (;;) {
      if (bound_elsewhere()) return outcome::start_again;
      const bool held_by_self = std::any_of(e.holdings.begin(), e.holdings.end(),
                                            [&](const holding& h) { return h.thread == self; });
      if (held_by_self) {
        if (until == platform::try_once) return outcome::not_taken;
        throw_error(std::errc::resource_deadlock_would_occur, "wait for a lock on", object.path_,
                    "the calling thread already holds a lock on this file in this process");
      }
      if (can_take(e, mode)) break;
      if (until == platform::try_once ||
          (until != platform::no_deadline && std::chrono::steady_clock::now() >= until)) {
        return outcome::not_taken;
      }
      if (mode == lock_mode::exclusive) ++e.writers_waiting;
      ++e.sleepers;
      if (until == platform::no_deadline) {
        e.changed.wait(guard);
      } else {
        e.changed.wait_until(guard, until);
      }
      --e.sleepers;
      if (mode == lock_mode::exclusive && --e.writers_waiting == 0) e.notify();
    }
    if (mode == lock_mode::exclusive || e.readers == 0) {
      // Nobody in this process holds the file: take the OS lock, outside the table's mutex.
      if (mode == lock_mode::exclusive && !e.file.writable) {
        throw_error(std::errc::permission_denied, "take a write lock on", object.path_,
                    "the file can only be opened for reading");
      }
      e.os_busy = true;
      guard.unlock();
      bool taken = false;
      try {
        taken = platform::lock(e.file.handle, mode, until, object.path_);
      } catch (...) {
        guard.lock();
        e.os_busy = false;
        e.notify();
        throw;
      }
      guard.lock();
      e.os_busy = false;
      e.notify();
      if (!taken) return outcome::not_taken;
      const bool replaced = object.options_.remove_on_release && !still_at_path(e, object);
      if (replaced || bound_elsewhere()) {
        // The previous holder deleted the file while this process waited for it, or the object
        // now holds a lock on another file: this one is not for it.
        platform::unlock(e.file.handle);
        if (replaced) unlist(e);
        return outcome::start_again;
      }
    }
    e.holdings.push_back({self, &object, mode});
    if (mode == lock_mode::shared) {
      ++e.readers;
    } else {
      e.writer = true;
    }
    return outcome::taken;
  }

  static bool still_at_path(const inode_entry& e, const lock_object& object) {
    try {
      const auto id = platform::identify(object.path_, object.options_.follow_symlinks);
      return id && *id == e.file.id;
    } catch (const std::system_error&) {
      return false;  // Something else is at the path now; binding again reports it.
    }
  }

  // Drops one lock of `mode` held by `object`, preferring one the calling thread took. Returns
  // the OS error of unlocking, if any; the lock is dropped from this process in any case.
  std::error_code drop(lock_object& object, lock_mode mode) {
    const auto& entry = object.entry_;
    if (!entry) return not_held(object, mode);
    auto& holdings = entry->holdings;
    const auto self = this_thread_token();
    auto it = std::find_if(holdings.begin(), holdings.end(), [&](const holding& h) {
      return h.owner == &object && h.mode == mode && h.thread == self;
    });
    if (it == holdings.end()) {
      it = std::find_if(holdings.begin(), holdings.end(),
                        [&](const holding& h) { return h.owner == &object && h.mode == mode; });
    }
    if (it == holdings.end()) return not_held(object, mode);
    holdings.erase(it);
    if (mode == lock_mode::shared) {
      --entry->readers;
    } else {
      entry->writer = false;
    }
    const bool unbinds = --object.holds_ == 0 && !object.options_.keep_open;
    std::error_code ec;
    if (entry->readers == 0 && !entry->writer) {
      entry->gate_closed = false;
      if (object.options_.remove_on_release &&
          platform::remove_if_unused(entry->file.handle, mode, entry->file.id, object.path_)) {
        unlist(*entry);
      }
      // When the file is about to be closed, and closing drops the lock at once, one call does.
      const bool closes = unbinds && entry->users == 1;
      if (!closes || !platform::closing_releases_locks()) ec = platform::unlock(entry->file.handle);
    }
    entry->notify();
    if (unbinds) unbind(object);
    return ec;
  }

  [[noreturn]] static std::error_code not_held(const lock_object& object, lock_mode mode) {
    throw_error(std::errc::operation_not_permitted, "release", object.path_,
                mode == lock_mode::shared ? "this object holds no read lock on it"
                                          : "this object does not hold the lock");
  }

  // fork() copies the table into the child with the handles of the parent's open files. The
  // child must neither use nor keep them: an open-file-description lock lives as long as any
  // copy of its descriptor, so a child that kept one would keep its parent's lock alive.
  static void prepare_fork() { get().mutex.lock(); }
  static void parent_after_fork() { get().mutex.unlock(); }
  static void child_after_fork() {
    auto& table = get();
    for (auto& [id, entry] : table.entries) {
      platform::close(entry->file.handle);  // Closing, not unlocking: the lock is the parent's.
      for (const auto handle : entry->spare_handles) platform::close(handle);
      entry->spare_handles.clear();
      entry->listed = false;
      entry->orphaned = true;
      entry->holdings.clear();
      entry->readers = 0;
      entry->writer = false;
      entry->gate_closed = false;
      // Threads that waited on it in the parent do not exist here; start from a fresh one.
      entry->sleepers = 0;
      new (&entry->changed) std::condition_variable();
    }
    table.entries.clear();
    table.mutex.unlock();
  }
};

lock_object::~lock_object() {
  auto& table = lock_table::get();
  std::lock_guard<std::mutex> guard(table.mutex);
  lock_table::forget_if_stale(*this);
  while (entry_) {
    const auto& holdings = entry_->holdings;
    const auto it = std::find_if(holdings.begin(), holdings.end(),
                                 [&](const holding& h) { return h.owner == this; });
    if (it == holdings.end()) break;
    table.drop(*this, it->mode);  // An unlock error needs no report: closing drops the lock.
  }
  if (entry_) table.unbind(*this);
}

bool lock_object::acquire(lock_mode mode, platform::deadline until) {
  auto& table = lock_table::get();
  std::unique_lock<std::mutex> guard(table.mutex);
  lock_table::forget_if_stale(*this);
  for (;;) {
    // A file kept open only by keep_open that was deleted since is given up for the new one.
    if (entry_ && holds_ == 0 && !entry_->listed) table.unbind(*this);
    std::shared_ptr<inode_entry> entry;
    if (entry_) {
      entry = entry_;
      ++entry->users;
    } else {
      entry = table.find_or_open(*this);
    }
    auto result = lock_table::outcome::not_taken;
    try {
      result = table.wait_and_take(*this, *entry, mode, until, guard);
    } catch (...) {
      table.release_use(std::move(entry));
      throw;
    }
    if (result == lock_table::outcome::taken) {
      ++holds_;
      if (entry_) {
        table.release_use(std::move(entry));
      } else {
        entry_ = std::move(entry);  // This call's use becomes the object's binding.
      }
      return true;
    }
    table.release_use(std::move(entry));
    if (result == lock_table::outcome::not_taken) return false;
  }
}

void lock_object::release(lock_mode mode) {
  auto& table = lock_table::get();
  std::lock_guard<std::mutex> guard(table.mutex);
  lock_table::forget_if_stale(*this);
  if (const auto ec = table.drop(*this, mode)) throw_error(ec, "unlock", path_);
}

bool lock_object::holds(lock_mode mode) const noexcept {
  auto& table = lock_table::get();
  std::lock_guard<std::mutex> guard(table.mutex);
  if (!entry_ || entry_->orphaned) return false;
  return std::any_of(entry_->holdings.begin(), entry_->holdings.end(),
                     [&](const holding& h) { return h.owner == this && h.mode == mode; });
}

platform::native_handle lock_object::native_handle() const noexcept {
  auto& table = lock_table::get();
  std::lock_guard<std::mutex> guard(table.mutex);
  if (!entry_ || entry_->orphaned || holds_ == 0) return platform::invalid_handle;
  return entry_->file.handle;
}

}  // namespace fasteners::detail
