// The process-wide list of a backend's lock states by the identity of their lock.
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "thread_safety.hpp"

namespace fasteners::detail::engine {

// Which State (a lock_state) stands for the lock of each Key in this process. A process uses few
// locks at once, so a vector searched from the front costs less than a tree and does not
// allocate once it has grown. A state is listed from when it is made until it stops standing for
// its lock (it is replaced, or nothing binds it any more); it is unlisted before it goes, so a
// reference made under the mutex is never the last one. Never destroyed (make it with new): lock
// objects may outlive static destruction.
//
// Mutex rules: `mu` guards the list and is held only briefly, never across a system call or a
// wait. It is taken inside a state's mutex (a state unlists itself), never the other way round.
template <class Key, class State>
class state_registry {
 public:
  mutex mu{mutex::forever};

  // The listed state of `key`, or nothing.
  std::shared_ptr<State> lookup(const Key& key) FASTENERS_REQUIRES(mu) {
    const auto it = find(key);
    return it == entries_.end() ? nullptr : it->state.lock();
  }
  // Lists `state` under `key`, in place of whatever was listed there.
  void put(const Key& key, const std::shared_ptr<State>& state) FASTENERS_REQUIRES(mu) {
    const auto it = find(key);
    if (it != entries_.end()) {
      it->state = state;
      it->raw = state.get();
      return;
    }
    entries_.push_back({key, state, state.get()});
    size_.store(entries_.size(), std::memory_order_relaxed);
  }
  // Stops listing `state` under `key`; returns whether it was listed.
  bool erase(const Key& key, const State& state) FASTENERS_REQUIRES(mu) {
    const auto it = find(key);
    if (it == entries_.end() || it->raw != &state) return false;
    *it = std::move(entries_.back());
    entries_.pop_back();
    size_.store(entries_.size(), std::memory_order_relaxed);
    return true;
  }
  // Forgets every state (in a child of fork(), where they are the parent's).
  void clear() FASTENERS_REQUIRES(mu) {
    entries_.clear();
    size_.store(0, std::memory_order_relaxed);
  }
  // Read without the mutex: whether nothing is listed, as a hint.
  bool empty_hint() const noexcept { return size_.load(std::memory_order_relaxed) == 0; }

  // The listed state of `key` with a binding counted there (lock_state::attach), or nothing. A
  // state that stops standing for its lock is unlisted under its own mutex, which attach() waits
  // for: once attach() fails, the state is not listed any more.
  std::shared_ptr<State> attach(const Key& key) FASTENERS_EXCLUDES(mu) {
    std::shared_ptr<State> found;
    {
      mutex_lock lock(mu);
      found = lookup(key);
    }
    if (found && found->attach()) return found;
    return nullptr;
  }

 private:
  struct entry {
    Key key;
    std::weak_ptr<State> state;
    const State* raw;  // What `state` points to, to compare without a reference.
  };
  typename std::vector<entry>::iterator find(const Key& key) FASTENERS_REQUIRES(mu) {
    return std::find_if(entries_.begin(), entries_.end(),
                        [&](const entry& e) { return e.key == key; });
  }

  std::vector<entry> entries_ FASTENERS_GUARDED_BY(mu);
  std::atomic<std::size_t> size_{0};
};

}  // namespace fasteners::detail::engine
