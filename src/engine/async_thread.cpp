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

#ifndef _WIN32
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <climits>
#ifdef __linux__
#include <sys/eventfd.h>
#endif
#endif

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

#ifndef _WIN32
// A watched descriptor (see watch()).
struct watch_entry {
  std::uint64_t id = 0;
  int fd = -1;
  short events = 0;
  std::shared_ptr<fd_watcher> watcher;
};

// What wakes the thread from poll(): an eventfd (Linux), or a pipe elsewhere. Non-blocking and
// close-on-exec. Without one (no descriptor left), the thread polls at most wake_interval apart.
struct wake_channel {
  int read_fd = -1;
  int write_fd = -1;

  bool open() noexcept {
    if (read_fd >= 0) return true;
#ifdef __linux__
    read_fd = write_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return read_fd >= 0;
#else
    int fds[2];
    if (::pipe(fds) != 0) return false;
    for (const int fd : fds) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    read_fd = fds[0];
    write_fd = fds[1];
    return true;
#endif
  }
  // Makes read_fd readable until drain().
  void signal() const noexcept {
    if (write_fd < 0) return;
#ifdef __linux__
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(write_fd, &one, sizeof one);
#else
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(write_fd, &byte, 1);
#endif
  }
  void drain() const noexcept {
    char buffer[64];
    while (::read(read_fd, buffer, sizeof buffer) > 0) {
    }
  }
  // In a child of fork(): the descriptors are the parent's channel, which the child must not
  // read or signal.
  void forget() noexcept {
    if (read_fd >= 0) ::close(read_fd);
    if (write_fd >= 0 && write_fd != read_fd) ::close(write_fd);
    read_fd = write_fd = -1;
  }
};

constexpr auto wake_interval = std::chrono::milliseconds(10);
#endif

struct hub {
  // The parent's hub, in a child of fork(): kept as it was, never used (see child_after_fork()).
  hub* parent = nullptr;
  mutex mu{mutex::forever};
#ifdef _WIN32
  std::condition_variable work;  // Wakes the thread.
#else
  wake_channel waker FASTENERS_GUARDED_BY(mu);                // Wakes the thread from poll().
  std::vector<watch_entry> watches FASTENERS_GUARDED_BY(mu);  // In the order of watch().
  std::uint64_t last_watch FASTENERS_GUARDED_BY(mu) = 0;      // The last id given.
  // What the thread gives poll(), and the watches they stand for: the thread's alone.
  std::vector<pollfd> poll_fds;
  std::vector<std::uint64_t> poll_ids;
#endif
  std::condition_variable finished;  // A handler finished.
  std::deque<std::shared_ptr<async_request>> completions FASTENERS_GUARDED_BY(mu);
  std::deque<std::shared_ptr<async_request>> restarts FASTENERS_GUARDED_BY(mu);
  std::vector<timer> timers FASTENERS_GUARDED_BY(mu);  // A heap, soonest first.
  bool running FASTENERS_GUARDED_BY(mu) = false;
  // Acquisitions begun (begin()) whose handlers have not run: the thread stays while there are.
  long pending FASTENERS_GUARDED_BY(mu) = 0;          // The thread exists.
  bool sleeping FASTENERS_GUARDED_BY(mu) = false;     // It waits on `work`, or in poll().
  std::uint64_t thread FASTENERS_GUARDED_BY(mu) = 0;  // Its this_thread_token().
};

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;

// This process's hub. Never destroyed: handlers may finish after static destruction. Replaced
// in a child of fork() only, which has one thread then.
hub* current_hub = nullptr;

hub& the_hub() {
  static const bool made = [] {
    platform::at_fork(nullptr, nullptr, &child_after_fork);
    current_hub = new hub;
    return true;
  }();
  static_cast<void>(made);
  return *current_hub;
}

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // A thread of the parent may have held the mutex or been changing the queues at the fork: the
  // child makes a new hub, leaving the old one's contents untouched (the acquisitions,
  // the watchers, which may own the parent's sessions, and the thread are the parent's). No lock
  // is taken before the fork, so the hub's mutex never orders against the states' mutexes there.
#ifndef _WIN32
  // The wake-up channel is the parent's too: the child closes its copies of it.
  wake_channel parents = the_hub().waker;
  parents.forget();
#endif
  // The parent's hub stays reachable from the new one, untouched.
  hub* const fresh = new hub;
  fresh->parent = current_hub;
  current_hub = fresh;
}

// The object whose handler the calling thread runs now, if any, and whether that handler
// destroyed it (see wait_finished()).
thread_local const lock_object* running_owner = nullptr;
thread_local bool owner_gone = false;
// Where the calling thread collects the completions it makes, if it runs them itself (collector).
thread_local std::vector<std::shared_ptr<async_request>>* collected = nullptr;

// Runs `r`'s handler, then counts it finished for its object, unless the handler destroyed it.
void finish(hub& h, const std::shared_ptr<async_request>& r) FASTENERS_EXCLUDES(h.mu) {
  lock_object& owner = r->owner;
  const lock_object* const outer = running_owner;
  const bool outer_gone = owner_gone;
  running_owner = &owner;
  owner_gone = false;
  owner.after_async(*r);
  // A handler that throws ends the process, as an exception leaving a thread's function does.
  [&]() noexcept { r->handler(r->result()); }();
  const bool gone = owner_gone;
  running_owner = outer;
  owner_gone = outer_gone;
  {
    mutex_lock lock(h.mu);
    if (!gone) owner.async_finished();
    --h.pending;
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

#ifndef _WIN32
// Sleeps in poll() over the wake-up channel and the watched descriptors until `until`, letting go
// of h.mu meanwhile; returns the watches that poll() reported, with their events.
std::vector<std::pair<std::uint64_t, short>> sleep_until(hub& h, deadline until)
    FASTENERS_REQUIRES(h.mu) {
  auto& fds = h.poll_fds;
  auto& ids = h.poll_ids;
  std::vector<std::pair<std::uint64_t, short>> ready;
  const bool waker = h.waker.open();
  try {
    fds.clear();
    ids.clear();
    fds.push_back({waker ? h.waker.read_fd : -1, POLLIN, 0});
    ids.push_back(0);
    for (const auto& e : h.watches) {
      fds.push_back({e.fd, e.events, 0});
      ids.push_back(e.id);
    }
  } catch (const std::bad_alloc&) {
    fds.resize(1);  // The watches wait for a later round.
    ids.resize(1);
    if (until == deadline::max() || until - std::chrono::steady_clock::now() > wake_interval) {
      until = std::chrono::steady_clock::now() + wake_interval;
    }
  }
  if (!waker &&
      (until == deadline::max() || until - std::chrono::steady_clock::now() > wake_interval)) {
    until = std::chrono::steady_clock::now() + wake_interval;
  }
  int timeout = -1;
  if (until != deadline::max()) {
    // Rounded up: a deadline is never early, and the thread does not spin before it.
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    timeout =
        static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, INT_MAX));
  }
  h.sleeping = true;
  int n = 0;
  {
    const mutex_unlock unlocked(h.mu);
    n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), timeout);
  }
  h.sleeping = false;
  if (n <= 0) return ready;
  if (fds[0].revents != 0) h.waker.drain();
  try {
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents != 0) ready.emplace_back(ids[i], fds[i].revents);
    }
  } catch (const std::bad_alloc&) {
    // Level-triggered: the next round reports them again.
  }
  return ready;
}
#endif

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
#ifdef _WIN32
    if (h.timers.empty()) {
      if (h.pending == 0 && now - idle_since >= idle_time) break;
      h.sleeping = true;
      h.mu.wait_until(h.work, idle_since + idle_time);
    } else {
      h.sleeping = true;
      h.mu.wait_until(h.work, h.timers.front().when);
      idle_since = std::chrono::steady_clock::now();
    }
    h.sleeping = false;
#else
    deadline until = deadline::max();
    if (!h.timers.empty()) {
      until = h.timers.front().when;
    } else if (h.watches.empty()) {
      if (h.pending == 0 && now - idle_since >= idle_time) break;
      until = std::max(idle_since, now) + idle_time;
    }
    const bool watching = !h.watches.empty();
    for (const auto& [id, revents] : sleep_until(h, until)) {
      std::shared_ptr<fd_watcher> w;
      for (const auto& e : h.watches) {
        if (e.id == id) w = e.watcher;
      }
      if (!w) continue;  // Unwatched meanwhile.
      const mutex_unlock unlocked(h.mu);
      w->ready(revents);
      w.reset();  // Perhaps the last reference: dropped outside the mutex.
    }
    if (watching || !h.timers.empty()) idle_since = std::chrono::steady_clock::now();
#endif
    if (!h.completions.empty() || !h.restarts.empty())
      idle_since = std::chrono::steady_clock::now();
  }
  h.running = false;
  h.thread = 0;
}

// Wakes the thread, or starts it; with h.mu held. Returns false if no thread could be started.
bool wake(hub& h) FASTENERS_REQUIRES(h.mu) {
  if (h.running) {
#ifdef _WIN32
    if (h.sleeping) h.work.notify_one();
#else
    if (h.sleeping) h.waker.signal();
#endif
    return true;
  }
#ifndef _WIN32
  h.waker.open();  // Else the thread polls (see wake_channel).
#endif
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

collector::collector() noexcept : outer_(collected) { collected = &mine_; }

collector::~collector() {
  collected = outer_;
  // Whatever run() did not get to goes to the thread.
  for (auto& r : mine_) complete(std::move(r));
}

void collector::run() noexcept {
  collected = outer_;
  auto& h = the_hub();
  std::vector<std::shared_ptr<async_request>> mine;
  mine.swap(mine_);
  for (const auto& r : mine) finish(h, r);
}

std::error_code begin() noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  if (!h.running) {
#ifndef _WIN32
    h.waker.open();  // Else the thread polls (see wake_channel).
#endif
    if (const auto error = platform::start_thread(&run, nullptr)) return error;
    h.running = true;
  }
  ++h.pending;
  return {};
}

void end_unused() noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  --h.pending;
}

void complete(std::shared_ptr<async_request> r) noexcept {
  if (collected != nullptr) {
    try {
      collected->push_back(std::move(r));
      return;
    } catch (const std::bad_alloc&) {
      // The thread runs it instead.
    }
  }
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  h.completions.push_back(std::move(r));
  h.finished.notify_all();  // The thread itself may wait for it (wait_finished()).
  if (!wake(h)) {
    // No thread can be started now (the process's limit): the handler waits for the next start.
    // The thread's own waits retry at the next timer; nothing is lost meanwhile.
  }
}

void restart(std::shared_ptr<async_request> r) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  h.restarts.push_back(std::move(r));
  h.finished.notify_all();  // As complete().
  wake(h);
}

void expire_at(const std::shared_ptr<async_request>& r, deadline until) noexcept {
  add_timer({until, r, {}});
}

void pump_at(const std::shared_ptr<lock_state>& state, deadline when) noexcept {
  add_timer({when, {}, state});
}

#ifndef _WIN32
std::uint64_t watch(int fd, short events, std::shared_ptr<fd_watcher> w) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  try {
    h.watches.push_back({h.last_watch + 1, fd, events, std::move(w)});
  } catch (const std::bad_alloc&) {
    return 0;
  }
  wake(h);  // The thread polls the descriptor from now on.
  return ++h.last_watch;
}

void rewatch(std::uint64_t id, short events) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  for (auto& e : h.watches) {
    if (e.id == id && e.events != events) {
      e.events = events;
      wake(h);
    }
  }
}

void unwatch(std::uint64_t id) noexcept {
  if (id == 0) return;
  std::shared_ptr<fd_watcher> gone;  // Dropped after the mutex.
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  const auto it = std::find_if(h.watches.begin(), h.watches.end(),
                               [&](const watch_entry& e) { return e.id == id; });
  if (it == h.watches.end()) return;
  gone = std::move(it->watcher);
  h.watches.erase(it);
  // The thread's poll() still includes the descriptor, which may be closed and used anew: its
  // report is dropped (the id is gone), and the next round leaves it out. Once nothing is
  // watched, the thread is woken to count its idle time, so that it ends when nothing is pending.
  if (h.watches.empty() && h.running && h.sleeping) h.waker.signal();
}
#endif

void wait_finished(const lock_object& owner, std::atomic<int>& live) noexcept {
  auto& h = the_hub();
  mutex_lock lock(h.mu);
  if (running_owner == &owner) {
    // Destroyed by its own handler, on this thread: that handler is never counted down.
    owner_gone = true;
    live.fetch_sub(1, std::memory_order_relaxed);
  }
  const bool on_thread = h.running && h.thread == this_thread_token();
  for (;;) {
    // On the thread: what is queued for `owner` runs now, since nothing else would run it; what
    // is queued later (an acquisition that a backend settles first) wakes the wait below.
    while (on_thread) {
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
      const mutex_unlock unlocked(h.mu);
      if (restarted) {
        restart_one(r);
      } else {
        finish(h, r);
      }
    }
    if (live.load(std::memory_order_acquire) <= 0) break;
    h.mu.wait(h.finished);
  }
}

}  // namespace fasteners::detail::engine::async_thread
