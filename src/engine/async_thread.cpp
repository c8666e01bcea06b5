// The async thread: handlers, deadlines and new bindings of asynchronous acquisitions.
#include "engine/async_thread.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <new>
#include <utility>
#include <vector>

#include "engine/async_request.hpp"
#include "engine/lock_object.hpp"
#include "engine/lock_state.hpp"
#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::engine::async_thread {
namespace {

// How long the thread waits with nothing to do before it ends.
constexpr auto idle_time = std::chrono::seconds(2);

struct timer {
  deadline when;
  std::weak_ptr<async_request> request;  // To time out, or
  std::weak_ptr<lock_state> state;       // to pump.
};

struct later {
  bool operator()(const timer& a, const timer& b) const { return a.when > b.when; }
};

struct hub {
  mutex mu{mutex::forever};
  std::condition_variable work;      // Wakes the thread.
  std::condition_variable finished;  // A handler finished.
  std::deque<std::shared_ptr<async_request>> completions FASTENERS_GUARDED_BY(mu);
  std::deque<std::shared_ptr<async_request>> restarts FASTENERS_GUARDED_BY(mu);
  std::vector<timer> timers FASTENERS_GUARDED_BY(mu);  // A heap, soonest first.
  bool running FASTENERS_GUARDED_BY(mu) = false;       // The thread exists.
  bool sleeping FASTENERS_GUARDED_BY(mu) = false;      // It waits on `work`.
  std::uint64_t thread FASTENERS_GUARDED_BY(mu) = 0;   // Its this_thread_token().
  // The object whose handler runs now, and whether it was destroyed meanwhile (by its handler).
  const lock_object* running_owner FASTENERS_GUARDED_BY(mu) = nullptr;
  bool owner_gone FASTENERS_GUARDED_BY(mu) = false;
};

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;

// Never destroyed: handlers may finish after static destruction. Allocated apart from its mutex's
// users, so that a child of fork() can make a new one in place (see child_after_fork()).
hub& the_hub() {
  static auto* const h = [] {
    platform::at_fork(nullptr, nullptr, &child_after_fork);
    return new hub;
  }();
  return *h;
}

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // A thread of the parent may have held the mutex or been changing the queues at the fork: the
  // child makes a new hub in place, leaving the old one's contents untouched (the acquisitions
  // and the thread are the parent's). No lock is taken before the fork, so the hub's mutex never
  // orders against the states' mutexes there.
  new (&the_hub()) hub;
}

// Runs `r`'s handler, then counts it finished for its object, unless the handler destroyed it.
void finish(hub& h, const std::shared_ptr<async_request>& r) FASTENERS_EXCLUDES(h.mu) {
  lock_object& owner = r->owner;
  {
    mutex_lock lock(h.mu);
    h.running_owner = &owner;
    h.owner_gone = false;
  }
  owner.after_async(*r);
  // A handler that throws ends the process, as an exception leaving a thread's function does.
  [&]() noexcept { r->handler(r->result()); }();
  bool gone = false;
  {
    mutex_lock lock(h.mu);
    gone = h.owner_gone;
    h.running_owner = nullptr;
    if (!gone) owner.async_finished();
  }
  h.finished.notify_all();
}

void restart_one(const std::shared_ptr<async_request>& r) {
  r->owner.after_async(*r);
  if (r->decided()) {
    complete(r);
  } else {
    r->owner.restart_async(r);
  }
}

void fire(const timer& t) {
  if (auto r = t.request.lock()) {
    if (r->decided()) return;
    if (auto state = r->where()) state->expire(r);
  } else if (auto state = t.state.lock()) {
    state->pump_async();
  }
}

void run(void*) {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  h.thread = this_thread_token();
  auto idle_since = std::chrono::steady_clock::now();
  for (;;) {
    if (!h.completions.empty()) {
      auto r = std::move(h.completions.front());
      h.completions.pop_front();
      const mutex_unlock unlocked(h.mu);
      finish(h, r);
      continue;
    }
    if (!h.restarts.empty()) {
      auto r = std::move(h.restarts.front());
      h.restarts.pop_front();
      const mutex_unlock unlocked(h.mu);
      restart_one(r);
      continue;
    }
    // Timers of acquisitions decided already, or of states gone, need no wake-up.
    while (!h.timers.empty() && h.timers.front().request.expired() &&
           h.timers.front().state.expired()) {
      std::pop_heap(h.timers.begin(), h.timers.end(), later());
      h.timers.pop_back();
    }
    const auto now = std::chrono::steady_clock::now();
    if (!h.timers.empty() && h.timers.front().when <= now) {
      std::pop_heap(h.timers.begin(), h.timers.end(), later());
      const timer t = std::move(h.timers.back());
      h.timers.pop_back();
      const mutex_unlock unlocked(h.mu);
      fire(t);
      continue;
    }
    if (h.timers.empty()) {
      if (now - idle_since >= idle_time) break;
      h.sleeping = true;
      h.mu.wait_until(h.work, idle_since + idle_time);
    } else {
      h.sleeping = true;
      h.mu.wait_until(h.work, h.timers.front().when);
      idle_since = std::chrono::steady_clock::now();
    }
    h.sleeping = false;
    if (!h.completions.empty() || !h.restarts.empty())
      idle_since = std::chrono::steady_clock::now();
  }
  h.running = false;
  h.thread = 0;
}

// Wakes the thread, or starts it; with h.mu held. Returns false if no thread could be started.
bool wake(hub& h) FASTENERS_REQUIRES(h.mu) {
  if (h.running) {
    if (h.sleeping) h.work.notify_one();
    return true;
  }
  if (platform::start_thread(&run, nullptr)) return false;
  h.running = true;
  return true;
}

void add_timer(timer t) {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  const bool sooner = h.timers.empty() || t.when < h.timers.front().when;
  h.timers.push_back(std::move(t));
  std::push_heap(h.timers.begin(), h.timers.end(), later());
  if (sooner) wake(h);
}

}  // namespace

void complete(std::shared_ptr<async_request> r) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  h.completions.push_back(std::move(r));
  if (!wake(h)) {
    // No thread can be started now (the process's limit): the handler waits for the next start.
    // The thread's own waits retry at the next timer; nothing is lost meanwhile.
  }
}

void restart(std::shared_ptr<async_request> r) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  h.restarts.push_back(std::move(r));
  wake(h);
}

void expire_at(const std::shared_ptr<async_request>& r, deadline until) noexcept {
  add_timer({until, r, {}});
}

void pump_at(const std::shared_ptr<lock_state>& state, deadline when) noexcept {
  add_timer({when, {}, state});
}

void wait_finished(const lock_object& owner, std::atomic<int>& live) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  if (h.running && h.thread == this_thread_token()) {
    // On the thread: what is queued for `owner` runs now, since nothing else would run it.
    for (;;) {
      auto mine = [&](const std::shared_ptr<async_request>& r) { return &r->owner == &owner; };
      auto it = std::find_if(h.completions.begin(), h.completions.end(), mine);
      bool restarted = false;
      if (it == h.completions.end()) {
        it = std::find_if(h.restarts.begin(), h.restarts.end(), mine);
        if (it == h.restarts.end()) break;
        restarted = true;
      }
      auto r = std::move(*it);
      (restarted ? h.restarts : h.completions).erase(it);
      const auto* const outer = h.running_owner;
      const bool outer_gone = h.owner_gone;
      {
        const mutex_unlock unlocked(h.mu);
        if (restarted) {
          restart_one(r);
        } else {
          finish(h, r);
        }
      }
      h.running_owner = outer;
      h.owner_gone = outer_gone;
    }
    if (h.running_owner == &owner) {
      h.owner_gone = true;
      live.fetch_sub(1, std::memory_order_relaxed);  // The running handler's, never counted down.
    }
  }
  while (live.load(std::memory_order_acquire) > 0) h.mu.wait(h.finished);
}

}  // namespace fasteners::detail::engine::async_thread
