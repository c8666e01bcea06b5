// One worker process of the randomized test: threads that run random operations on lock objects.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "fasteners/fasteners.hpp"
#include "random_test.hpp"

namespace fasteners_random {
namespace {

using fasteners::interprocess_lock;
using fasteners::interprocess_reader_writer_lock;
using steady = std::chrono::steady_clock;
using system_clock = std::chrono::system_clock;
using std::chrono::microseconds;

// How long a worker thread waits for its fork child before calling it hung.
constexpr auto k_child_limit = std::chrono::seconds(30);

// One lock object of a thread: an interprocess_lock or an interprocess_reader_writer_lock.
struct lock_object {
  int file = 0;
  std::optional<interprocess_lock> plain;
  std::optional<interprocess_reader_writer_lock> rw;
  mode held = mode::none;  // What the thread took through it (at most one lock).

  bool is_rw() const { return rw.has_value(); }
  std::intptr_t native_handle() const {
    return is_rw() ? rw->native_handle() : plain->native_handle();
  }
};

enum class wait_kind { blocking, try_once, timed };

// A timed acquire: which call, its timeout (may be zero or negative) and the deadlines.
struct timed_plan {
  int variant = 0;  // 0: acquire(true, d), 1: try_lock_for(d), 2/3: try_lock_until(steady/system)
  microseconds d{0};
  steady::time_point start;
  steady::time_point steady_deadline;
  system_clock::time_point system_deadline;
};

// The acquire calls of the public API, per lock type and mode: four blocking ones, four tries and
// the four timed ones of timed_plan::variant.
struct acquire_call {
  const char* name;
  bool (*call)(lock_object& o, const timed_plan& p);
};
struct acquire_calls {
  acquire_call blocking[4];
  acquire_call try_once[4];
  acquire_call timed[4];
};

using seconds_double = std::chrono::duration<double>;

const acquire_calls k_plain_calls = {
    {{"acquire()", [](lock_object& o, const timed_plan&) { return o.plain->acquire(); }},
     {"acquire(true)", [](lock_object& o, const timed_plan&) { return o.plain->acquire(true); }},
     {"acquire(true, nullopt)",
      [](lock_object& o, const timed_plan&) { return o.plain->acquire(true, std::nullopt); }},
     {"lock()",
      [](lock_object& o, const timed_plan&) {
        o.plain->lock();
        return true;
      }}},
    {{"acquire(false)", [](lock_object& o, const timed_plan&) { return o.plain->acquire(false); }},
     {"acquire(false, 5 s)",
      [](lock_object& o, const timed_plan&) {
        return o.plain->acquire(false, std::chrono::seconds(5));
      }},
     {"try_lock()", [](lock_object& o, const timed_plan&) { return o.plain->try_lock(); }},
     {"acquire(false, 0 s)",
      [](lock_object& o, const timed_plan&) {
        return o.plain->acquire(false, seconds_double(0));
      }}},
    {{"acquire(true, d)",
      [](lock_object& o, const timed_plan& p) {
        return o.plain->acquire(true, seconds_double(p.d));
      }},
     {"try_lock_for(d)",
      [](lock_object& o, const timed_plan& p) { return o.plain->try_lock_for(p.d); }},
     {"try_lock_until(steady)",
      [](lock_object& o, const timed_plan& p) {
        return o.plain->try_lock_until(p.steady_deadline);
      }},
     {"try_lock_until(system)", [](lock_object& o, const timed_plan& p) {
        return o.plain->try_lock_until(p.system_deadline);
      }}}};

const acquire_calls k_read_calls = {
    {{"acquire_read_lock()",
      [](lock_object& o, const timed_plan&) { return o.rw->acquire_read_lock(); }},
     {"acquire_read_lock(true)",
      [](lock_object& o, const timed_plan&) { return o.rw->acquire_read_lock(true); }},
     {"acquire_read_lock(true, nullopt)",
      [](lock_object& o, const timed_plan&) {
        return o.rw->acquire_read_lock(true, std::nullopt);
      }},
     {"lock_shared()",
      [](lock_object& o, const timed_plan&) {
        o.rw->lock_shared();
        return true;
      }}},
    {{"acquire_read_lock(false)",
      [](lock_object& o, const timed_plan&) { return o.rw->acquire_read_lock(false); }},
     {"acquire_read_lock(false, 1 s)",
      [](lock_object& o, const timed_plan&) {
        return o.rw->acquire_read_lock(false, std::chrono::seconds(1));
      }},
     {"try_lock_shared()",
      [](lock_object& o, const timed_plan&) { return o.rw->try_lock_shared(); }},
     {"acquire_read_lock(false, 0 s)",
      [](lock_object& o, const timed_plan&) {
        return o.rw->acquire_read_lock(false, seconds_double(0));
      }}},
    {{"acquire_read_lock(true, d)",
      [](lock_object& o, const timed_plan& p) {
        return o.rw->acquire_read_lock(true, seconds_double(p.d));
      }},
     {"try_lock_shared_for(d)",
      [](lock_object& o, const timed_plan& p) { return o.rw->try_lock_shared_for(p.d); }},
     {"try_lock_shared_until(steady)",
      [](lock_object& o, const timed_plan& p) {
        return o.rw->try_lock_shared_until(p.steady_deadline);
      }},
     {"try_lock_shared_until(system)", [](lock_object& o, const timed_plan& p) {
        return o.rw->try_lock_shared_until(p.system_deadline);
      }}}};

const acquire_calls k_write_calls = {
    {{"acquire_write_lock()",
      [](lock_object& o, const timed_plan&) { return o.rw->acquire_write_lock(); }},
     {"acquire_write_lock(true)",
      [](lock_object& o, const timed_plan&) { return o.rw->acquire_write_lock(true); }},
     {"acquire_write_lock(true, nullopt)",
      [](lock_object& o, const timed_plan&) {
        return o.rw->acquire_write_lock(true, std::nullopt);
      }},
     {"lock() (write)",
      [](lock_object& o, const timed_plan&) {
        o.rw->lock();
        return true;
      }}},
    {{"acquire_write_lock(false)",
      [](lock_object& o, const timed_plan&) { return o.rw->acquire_write_lock(false); }},
     {"acquire_write_lock(false, 1 s)",
      [](lock_object& o, const timed_plan&) {
        return o.rw->acquire_write_lock(false, std::chrono::seconds(1));
      }},
     {"try_lock() (write)", [](lock_object& o, const timed_plan&) { return o.rw->try_lock(); }},
     {"acquire_write_lock(false, 0 s)",
      [](lock_object& o, const timed_plan&) {
        return o.rw->acquire_write_lock(false, seconds_double(0));
      }}},
    {{"acquire_write_lock(true, d)",
      [](lock_object& o, const timed_plan& p) {
        return o.rw->acquire_write_lock(true, seconds_double(p.d));
      }},
     {"try_lock_for(d) (write)",
      [](lock_object& o, const timed_plan& p) { return o.rw->try_lock_for(p.d); }},
     {"try_lock_until(steady) (write)",
      [](lock_object& o, const timed_plan& p) { return o.rw->try_lock_until(p.steady_deadline); }},
     {"try_lock_until(system) (write)", [](lock_object& o, const timed_plan& p) {
        return o.rw->try_lock_until(p.system_deadline);
      }}}};

bool has_code(const std::system_error& e, std::errc code) {
  return e.code() == std::make_error_code(code);
}

class worker;

// One thread of a worker: its own lock objects and random number stream.
class actor {
 public:
  actor(worker& w, int index, std::uint64_t seed);
  void run();

 private:
  bool chance(int one_in) { return uniform(1, one_in) == 1; }
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  void fail(const char* format, ...) __attribute__((format(printf, 2, 3)));

  lock_object make_object(int file);
  int max_held_file() const;
  bool holds_file(int file) const;
  bool may_block(int file) const { return file > max_held_file(); }
  // A random object whose file this thread does not hold (and, if `blocking`, may wait for),
  // a reader-writer one if `rw_only`; -1 if there is none.
  int pick_free_object(bool blocking, bool rw_only = false);
  int pick_held_object();
  mode random_mode(const lock_object& o) {
    return o.is_rw() && chance(2) ? mode::read : mode::write;
  }
  void pause();

  void took(int record, int file, mode m, const char* how);
  void releasing(int record, int file, mode m);
  timed_plan plan_timed(bool allow_negative);
  void check_not_early(const timed_plan& p, const char* how);
  std::int64_t deadline_ns(const timed_plan& p) const;

  bool call_acquire(lock_object& o, mode m, wait_kind k, const timed_plan& p, const char*& how);
  void call_release(lock_object& o, mode m);
  bool attempt(int i, mode m, wait_kind k);
  void release(int i);
  void release_all();

  void op_acquire();
  void op_release();
  void op_hold();
  void op_destroy();
  void op_guard_scope();
  void op_std_lock_scope();
  void op_scoped_lock_pair();
  void op_shared_object_scope();
  void op_deadlock_probe();
  void op_misuse_probe();
  void op_move();
  void op_fork();
  void op_exit();
  int fork_child(const std::vector<std::intptr_t>& handles);
  void arrive_at_checkpoint();

  // Takes `mutex` with a random constructor of the std holder type, holds it briefly, releases.
  template <class Holder, class Mutex>
  void std_scope(int record, int file, Mutex& mutex, mode m, bool blocking_allowed, counter op);
  template <class Guard>
  void guard_scope(int i, Guard guard, mode m, const char* how);

  void check_step(const char* when);

  worker& w_;
  ledger& book_;
  const int slot_;
  const int index_;
  std::mt19937_64 rng_;
  std::vector<lock_object> objects_;
  int failures_ = 0;
};

// The process: its threads, the objects they share, and the descriptor checkpoints.
class worker {
 public:
  worker(const options& opts, shared_state& s, int slot, std::uint64_t seed)
      : opts_(opts), book_(s, opts.processes, opts.files), slot_(slot), seed_(seed) {
    for (int f = 0; f < opts.files; ++f) {
      const auto name = std::to_string(f);
      direct_.push_back(opts.dir / "locks" / ("lock_" + name));
      link_.push_back(opts.dir / ("link_" + name));
    }
  }

  int run() {
    baseline_fds_ = take_fd_census(opts_.dir / "locks").others;
    fasteners::lock_options lo;
    lo.remove_on_release = opts_.remove;
    for (int f = 0; f < opts_.files; ++f) {
      shared_objects_.emplace_back();
      shared_objects_.back().file = f;
      shared_objects_.back().rw.emplace(direct_[static_cast<std::size_t>(f)], lo);
    }
    active_ = opts_.threads;
    std::vector<std::thread> threads;
    for (int t = 0; t < opts_.threads; ++t) {
      const auto seed =
          seed_ * std::uint64_t{0x9e3779b97f4a7c15} + static_cast<std::uint64_t>(t) + 1;
      threads.emplace_back([this, t, seed] {
        actor a(*this, t, seed);
        a.run();
      });
    }
    for (auto& t : threads) t.join();
    shared_objects_.clear();
    check_descriptors("at the end");
    return k_exit_ok;
  }

  bool stopping() const { return book_.state().stop.load(std::memory_order_relaxed); }

  // Each thread arrives here with all its objects destroyed; the last one counts descriptors.
  void checkpoint() {
    std::unique_lock<std::mutex> guard(barrier_mutex_);
    const auto generation = generation_;
    if (++arrived_ == active_) {
      complete_checkpoint();
    } else {
      barrier_changed_.wait(guard, [&] { return generation_ != generation; });
    }
  }
  // _exit()s the process while holding whatever its threads hold, if none of them has finished
  // yet (ThreadSanitizer reports a finished, unjoined thread at _exit as a leak). Returns if one
  // has; a thread cannot finish meanwhile, since leave() waits for the same mutex.
  void exit_while_all_run() {
    std::unique_lock<std::mutex> guard(barrier_mutex_);
    if (active_ != opts_.threads) return;
    book_.count(c_exit);
    book_.mark_dying(slot_);
    ::_exit(k_exit_requested);
  }
  void leave() {
    std::lock_guard<std::mutex> guard(barrier_mutex_);
    --active_;
    if (arrived_ > 0 && arrived_ == active_) complete_checkpoint();
  }

  const options& opts_;
  ledger book_;
  const int slot_;
  const std::uint64_t seed_;
  std::vector<std::filesystem::path> direct_;
  std::vector<std::filesystem::path> link_;
  // One reader-writer lock object per file that all threads use at once.
  std::vector<lock_object> shared_objects_;
  std::atomic<bool> checkpoint_requested_{false};

 private:
  // With every lock object destroyed, the only descriptors left beyond the start are those of
  // timed waits that gave up and stay queued in the kernel until granted: at most one per lock
  // file and mode.
  void check_descriptors(const char* when) {
    const auto census = take_fd_census(opts_.dir / "locks");
    if (census.others != baseline_fds_ || census.most_per_lock_file > 2) {
      violation(book_.state(),
                "slot %d: %s, with all lock objects destroyed, %d descriptors besides lock files "
                "(%d at the start) and up to %d on one lock file (at most 2 allowed):%s",
                slot_, when, census.others, baseline_fds_, census.most_per_lock_file,
                list_fds().c_str());
    }
  }

  void complete_checkpoint() {
    check_descriptors("at a checkpoint");
    book_.count(c_checkpoint);
    arrived_ = 0;
    ++generation_;
    checkpoint_requested_.store(false);
    barrier_changed_.notify_all();
  }

  int baseline_fds_ = 0;
  std::mutex barrier_mutex_;
  std::condition_variable barrier_changed_;
  int active_ = 0;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
};

actor::actor(worker& w, int index, std::uint64_t seed)
    : w_(w), book_(w.book_), slot_(w.slot_), index_(index), rng_(seed) {
  for (int i = 0; i < w_.opts_.objects; ++i) {
    objects_.push_back(make_object(uniform(0, w_.opts_.files - 1)));
  }
}

void actor::fail(const char* format, ...) {
  char text[2048];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  ++failures_;
  violation(book_.state(), "slot %d thread %d: %s", slot_, index_, text);
}

lock_object actor::make_object(int file) {
  lock_object o;
  o.file = file;
  const bool via_link = chance(4);
  fasteners::lock_options lo;
  lo.remove_on_release = w_.opts_.remove;
  lo.follow_symlinks = via_link || chance(2);
  const auto f = static_cast<std::size_t>(file);
  const auto& path = via_link ? w_.link_[f] : w_.direct_[f];
  if (chance(2)) {
    o.rw.emplace(path, lo);
  } else {
    o.plain.emplace(path, lo);
  }
  return o;
}

int actor::max_held_file() const {
  int max = -1;
  for (const auto& o : objects_) {
    if (o.held != mode::none) max = std::max(max, o.file);
  }
  return max;
}

bool actor::holds_file(int file) const {
  return std::any_of(objects_.begin(), objects_.end(),
                     [&](const lock_object& o) { return o.held != mode::none && o.file == file; });
}

int actor::pick_free_object(bool blocking, bool rw_only) {
  std::vector<int> candidates;
  for (int i = 0; i < static_cast<int>(objects_.size()); ++i) {
    const auto& o = objects_[static_cast<std::size_t>(i)];
    if (holds_file(o.file) || (rw_only && !o.is_rw()) || (blocking && !may_block(o.file))) {
      continue;
    }
    candidates.push_back(i);
  }
  if (candidates.empty()) return -1;
  return candidates[static_cast<std::size_t>(uniform(0, static_cast<int>(candidates.size()) - 1))];
}

int actor::pick_held_object() {
  std::vector<int> candidates;
  for (int i = 0; i < static_cast<int>(objects_.size()); ++i) {
    if (objects_[static_cast<std::size_t>(i)].held != mode::none) candidates.push_back(i);
  }
  if (candidates.empty()) return -1;
  return candidates[static_cast<std::size_t>(uniform(0, static_cast<int>(candidates.size()) - 1))];
}

void actor::pause() {
  switch (uniform(0, 5)) {
    case 0:
    case 1:
      break;
    case 2:
    case 3:
      std::this_thread::yield();
      break;
    case 4:
      std::this_thread::sleep_for(microseconds(uniform(10, 200)));
      break;
    default:
      std::this_thread::sleep_for(microseconds(uniform(200, 1500)));
      break;
  }
}

void actor::took(int record, int file, mode m, const char* how) {
  book_.note_acquired(slot_, index_, record, file, m, how);
}

void actor::releasing(int record, int file, mode m) {
  book_.note_releasing(slot_, index_, record, file, m);
}

timed_plan actor::plan_timed(bool allow_negative) {
  timed_plan p;
  p.variant = uniform(0, 3);
  const int r = uniform(0, 9);
  int us = uniform(1, 20000);
  if (r < 2) {
    us = 0;
  } else if (r < 3 && allow_negative && p.variant != 0) {
    us = -uniform(1, 5000);
  }
  p.d = microseconds(us);
  p.start = steady::now();
  p.steady_deadline = p.start + p.d;
  p.system_deadline = system_clock::now() + p.d;
  return p;
}

std::int64_t actor::deadline_ns(const timed_plan& p) const {
  const auto d = std::max(p.d, microseconds(0));
  return std::chrono::duration_cast<std::chrono::nanoseconds>((p.start + d).time_since_epoch())
      .count();
}

void actor::check_not_early(const timed_plan& p, const char* how) {
  bool early = false;
  switch (p.variant) {
    case 0:
    case 1:
      early = steady::now() - p.start < p.d;
      break;
    case 2:
      early = steady::now() < p.steady_deadline;
      break;
    default:
      early = system_clock::now() < p.system_deadline;
      break;
  }
  if (early) {
    fail("%s (timeout %lld us) returned false before its deadline", how,
         static_cast<long long>(p.d.count()));
  }
}

bool actor::call_acquire(lock_object& o, mode m, wait_kind k, const timed_plan& p,
                         const char*& how) {
  const auto& calls = !o.is_rw() ? k_plain_calls : m == mode::read ? k_read_calls : k_write_calls;
  const auto& choices = k == wait_kind::blocking   ? calls.blocking
                        : k == wait_kind::try_once ? calls.try_once
                                                   : calls.timed;
  // A timed call is the plan's variant, whose deadline check_not_early() knows.
  const auto& c = k == wait_kind::timed ? choices[static_cast<std::size_t>(p.variant)]
                                        : choices[static_cast<std::size_t>(uniform(0, 3))];
  how = c.name;
  return c.call(o, p);
}

void actor::call_release(lock_object& o, mode m) {
  const bool standard = chance(2);
  if (!o.is_rw()) {
    standard ? o.plain->unlock() : o.plain->release();
  } else if (m == mode::read) {
    standard ? o.rw->unlock_shared() : o.rw->release_read_lock();
  } else {
    standard ? o.rw->unlock() : o.rw->release_write_lock();
  }
}

// One acquire through object i, with its wait recorded and its result booked.
bool actor::attempt(int i, mode m, wait_kind k) {
  auto& o = objects_[static_cast<std::size_t>(i)];
  const auto p = plan_timed(true);
  const counter c = k == wait_kind::blocking   ? c_acquire_blocking
                    : k == wait_kind::try_once ? c_acquire_try
                                               : c_acquire_timed;
  const auto deadline = k == wait_kind::blocking ? 0
                        : k == wait_kind::timed  ? deadline_ns(p)
                                                 : now_ns();
  book_.begin_wait(slot_, index_, 1u << o.file, m, deadline, c);
  const char* how = "acquire";
  const bool taken = call_acquire(o, m, k, p, how);
  if (taken) {
    o.held = m;
    took(i, o.file, m, how);
  }
  book_.end_wait(slot_, index_);
  book_.count(c);
  if (taken && k != wait_kind::blocking) {
    book_.count(k == wait_kind::try_once ? c_acquire_try_taken : c_acquire_timed_taken);
  }
  if (!taken && k == wait_kind::blocking) fail("blocking %s returned false", how);
  if (!taken && k == wait_kind::timed) check_not_early(p, how);
  if (taken) pause();
  return taken;
}

void actor::release(int i) {
  auto& o = objects_[static_cast<std::size_t>(i)];
  const auto m = o.held;
  releasing(i, o.file, m);
  o.held = mode::none;
  call_release(o, m);
  book_.count(c_release);
}

void actor::release_all() {
  for (int i = 0; i < static_cast<int>(objects_.size()); ++i) {
    if (objects_[static_cast<std::size_t>(i)].held != mode::none) release(i);
  }
}

void actor::op_acquire() {
  const int r = uniform(0, 99);
  auto k = r < 35 ? wait_kind::blocking : r < 65 ? wait_kind::try_once : wait_kind::timed;
  int i = pick_free_object(k == wait_kind::blocking);
  if (i < 0 && k == wait_kind::blocking) {
    k = wait_kind::timed;
    i = pick_free_object(false);
  }
  if (i < 0) return op_release();
  attempt(i, random_mode(objects_[static_cast<std::size_t>(i)]), k);
}

void actor::op_release() {
  const int i = pick_held_object();
  if (i < 0) return op_acquire();
  release(i);
}

void actor::op_hold() {
  book_.count(c_hold);
  std::this_thread::sleep_for(microseconds(uniform(100, 2000)));
}

void actor::op_destroy() {
  const int i = uniform(0, static_cast<int>(objects_.size()) - 1);
  auto& o = objects_[static_cast<std::size_t>(i)];
  if (o.held != mode::none) releasing(i, o.file, o.held);
  book_.count(c_destroy);
  const int file = uniform(0, w_.opts_.files - 1);
  if (chance(2)) {
    o.plain.reset();  // The destructor releases what the object holds.
    o.rw.reset();
    o = make_object(file);
  } else {
    o = make_object(file);  // Move assignment over a held object releases it too.
  }
}

template <class Guard>
void actor::guard_scope(int i, Guard guard, mode m, const char* how) {
  auto& o = objects_[static_cast<std::size_t>(i)];
  took(i, o.file, m, how);
  book_.end_wait(slot_, index_);
  if (!guard.owns_lock()) fail("%s returned a guard that owns nothing", how);
  pause();
  book_.check_held(slot_, index_, o.file, m, how);
  Guard moved = std::move(guard);
  if (guard.owns_lock() || !moved.owns_lock()) fail("a moved %s guard is wrong", how);
  const bool read_ok = o.rw->read_acquired() == (m == mode::read);
  const bool write_ok = o.rw->write_acquired() == (m == mode::write);
  if (!read_ok || !write_ok) fail("%s: the object does not report the lock its guard holds", how);
  releasing(i, o.file, m);
  if (chance(2)) moved.unlock();
}

void actor::op_guard_scope() {
  const int i = pick_free_object(true, true);
  if (i < 0) return op_std_lock_scope();
  auto& o = objects_[static_cast<std::size_t>(i)];
  const auto m = random_mode(o);
  book_.count(c_guard_scope);
  book_.begin_wait(slot_, index_, 1u << o.file, m, 0, c_guard_scope);
  if (m == mode::read) {
    guard_scope(i, o.rw->read_lock(), m, "read_lock()");
  } else {
    guard_scope(i, o.rw->write_lock(), m, "write_lock()");
  }
}

template <class Holder, class Mutex>
void actor::std_scope(int record, int file, Mutex& mutex, mode m, bool blocking_allowed,
                      counter op) {
  const int variant = uniform(0, blocking_allowed ? 5 : 3);
  const auto p = plan_timed(true);
  const bool timed = variant == 1 || variant == 2;
  book_.begin_wait(slot_, index_, 1u << file, m,
                   variant >= 4 ? 0
                   : timed      ? deadline_ns(p)
                                : now_ns(),
                   op);
  Holder holder;
  const char* how = "";
  switch (variant) {
    case 0:
      how = "std lock holder with try_to_lock";
      holder = Holder(mutex, std::try_to_lock);
      break;
    case 1:
      how = "std lock holder with a duration";
      holder = Holder(mutex, p.d);
      break;
    case 2:
      how = "std lock holder with a steady time point";
      holder = Holder(mutex, p.steady_deadline);
      break;
    case 3:
      how = "std lock holder, deferred, then try_lock()";
      holder = Holder(mutex, std::defer_lock);
      holder.try_lock();
      break;
    case 4:
      how = "std lock holder, blocking";
      holder = Holder(mutex);
      break;
    default:
      how = "std lock holder, deferred, then lock()";
      holder = Holder(mutex, std::defer_lock);
      holder.lock();
      break;
  }
  if (holder.owns_lock()) took(record, file, m, how);
  book_.end_wait(slot_, index_);
  if (timed && !holder.owns_lock()) {
    auto q = p;
    q.variant = variant;  // 1: try_lock_for, 2: try_lock_until on the steady clock.
    check_not_early(q, how);
  }
  if (!holder.owns_lock()) return;
  pause();
  book_.check_held(slot_, index_, file, m, how);
  releasing(record, file, m);
  if (chance(2)) holder.unlock();
}

void actor::op_std_lock_scope() {
  const int i = pick_free_object(false);
  if (i < 0) return op_release();
  auto& o = objects_[static_cast<std::size_t>(i)];
  const bool blocking = may_block(o.file);
  book_.count(c_std_lock_scope);
  const auto m = random_mode(o);
  if (!o.is_rw()) {
    if (blocking && chance(4)) {
      book_.begin_wait(slot_, index_, 1u << o.file, m, 0, c_std_lock_scope);
      std::lock_guard<interprocess_lock> guard(*o.plain);
      took(i, o.file, m, "std::lock_guard");
      book_.end_wait(slot_, index_);
      pause();
      book_.check_held(slot_, index_, o.file, m, "std::lock_guard");
      releasing(i, o.file, m);
      return;
    }
    return std_scope<std::unique_lock<interprocess_lock>>(i, o.file, *o.plain, m, blocking,
                                                          c_std_lock_scope);
  }
  if (m == mode::read) {
    return std_scope<std::shared_lock<interprocess_reader_writer_lock>>(i, o.file, *o.rw, m,
                                                                        blocking, c_std_lock_scope);
  }
  std_scope<std::unique_lock<interprocess_reader_writer_lock>>(i, o.file, *o.rw, m, blocking,
                                                               c_std_lock_scope);
}

void actor::op_scoped_lock_pair() {
  const int a = pick_free_object(true);
  if (a < 0) return op_acquire();
  int b = -1;
  for (int i = 0; i < static_cast<int>(objects_.size()); ++i) {
    const auto& o = objects_[static_cast<std::size_t>(i)];
    if (o.file != objects_[static_cast<std::size_t>(a)].file && !holds_file(o.file) &&
        may_block(o.file)) {
      b = i;
    }
  }
  if (b < 0) return op_acquire();
  auto& oa = objects_[static_cast<std::size_t>(a)];
  auto& ob = objects_[static_cast<std::size_t>(b)];
  book_.count(c_scoped_lock_pair);
  const bool blocking = chance(2);
  book_.begin_wait(slot_, index_, 1u << oa.file | 1u << ob.file, mode::write,
                   blocking ? 0 : now_ns(), c_scoped_lock_pair);
  // The exclusive side of either lock type; std::lock and std::try_lock take them together.
  auto with = [](lock_object& o, auto&& f) {
    if (o.is_rw()) {
      f(*o.rw);
    } else {
      f(*o.plain);
    }
  };
  with(oa, [&](auto& la) {
    with(ob, [&](auto& lb) {
      if (blocking) {
        std::scoped_lock both(la, lb);
        took(a, oa.file, mode::write, "std::scoped_lock");
        took(b, ob.file, mode::write, "std::scoped_lock");
        book_.end_wait(slot_, index_);
        pause();
        book_.check_held(slot_, index_, oa.file, mode::write, "std::scoped_lock");
        releasing(a, oa.file, mode::write);
        releasing(b, ob.file, mode::write);
        return;
      }
      const int failed = std::try_lock(la, lb);
      if (failed == -1) {
        took(a, oa.file, mode::write, "std::try_lock");
        took(b, ob.file, mode::write, "std::try_lock");
      }
      book_.end_wait(slot_, index_);
      if (failed != -1) return;
      pause();
      book_.check_held(slot_, index_, ob.file, mode::write, "std::try_lock");
      releasing(a, oa.file, mode::write);
      la.unlock();
      releasing(b, ob.file, mode::write);
      lb.unlock();
    });
  });
}

void actor::op_shared_object_scope() {
  const int file = uniform(0, w_.opts_.files - 1);
  if (holds_file(file)) return op_release();
  book_.count(c_shared_object_scope);
  auto& l = *w_.shared_objects_[static_cast<std::size_t>(file)].rw;
  const bool blocking = may_block(file);
  if (chance(2)) {
    std_scope<std::shared_lock<interprocess_reader_writer_lock>>(
        k_shared_record, file, l, mode::read, blocking, c_shared_object_scope);
  } else {
    std_scope<std::unique_lock<interprocess_reader_writer_lock>>(
        k_shared_record, file, l, mode::write, blocking, c_shared_object_scope);
  }
}

// A thread that holds a lock on a file asks for another one on that file: waiting must throw
// resource_deadlock_would_occur, trying must fail.
void actor::op_deadlock_probe() {
  const int i = pick_held_object();
  if (i < 0) return op_acquire();
  book_.count(c_deadlock_probe);
  const int file = objects_[static_cast<std::size_t>(i)].file;
  std::optional<lock_object> temporary;
  lock_object* target = nullptr;
  switch (uniform(0, 3)) {
    case 0:
      target = &objects_[static_cast<std::size_t>(i)];
      break;
    case 1:
      for (auto& o : objects_) {
        if (o.file == file && &o != &objects_[static_cast<std::size_t>(i)]) target = &o;
      }
      break;
    case 2:
      target = &w_.shared_objects_[static_cast<std::size_t>(file)];
      break;
    default:
      break;
  }
  if (target == nullptr) {
    temporary = make_object(file);
    target = &*temporary;
  }
  const auto m = random_mode(*target);
  const int r = uniform(0, 9);
  const auto k = r < 4 ? wait_kind::blocking : r < 7 ? wait_kind::timed : wait_kind::try_once;
  const auto p = plan_timed(false);
  const char* how = "acquire";
  try {
    bool taken = false;
    if (k == wait_kind::blocking && target->is_rw() && chance(3)) {
      how = m == mode::read ? "read_lock()" : "write_lock()";
      if (m == mode::read) {
        auto g = target->rw->read_lock();
        g.unlock();
      } else {
        auto g = target->rw->write_lock();
        g.unlock();
      }
      taken = true;
    } else {
      taken = call_acquire(*target, m, k, p, how);
      if (taken) call_release(*target, m);
    }
    if (taken) {
      fail("%s on file %d, which this thread already holds, took a second lock", how, file);
    } else if (k == wait_kind::blocking) {
      fail("blocking %s on a file this thread holds returned false instead of throwing", how);
    }
  } catch (const std::system_error& e) {
    if (k == wait_kind::try_once || !has_code(e, std::errc::resource_deadlock_would_occur)) {
      fail("%s on file %d, which this thread holds, threw an unexpected error: %s", how, file,
           e.what());
    }
  }
}

void actor::op_misuse_probe() {
  const int i = uniform(0, static_cast<int>(objects_.size()) - 1);
  auto& o = objects_[static_cast<std::size_t>(i)];
  book_.count(c_misuse_probe);
  const int variant = uniform(0, 2);
  if (variant == 0 && (o.is_rw() || o.held == mode::none)) {
    // Releasing what the object does not hold.
    mode m = mode::write;
    if (o.is_rw()) {
      m = o.held == mode::read    ? mode::write
          : o.held == mode::write ? mode::read
          : chance(2)             ? mode::read
                                  : mode::write;
    }
    try {
      call_release(o, m);
      fail("releasing a %s lock that the object does not hold did not throw", to_string(m));
    } catch (const std::system_error& e) {
      if (!has_code(e, std::errc::operation_not_permitted)) {
        fail("releasing a lock not held threw an unexpected error: %s", e.what());
      }
    }
    return;
  }
  if (variant <= 1) {
    // A negative or NaN timeout.
    const std::chrono::duration<double> bad(chance(3) ? std::nan("") : -0.001 * uniform(1, 100));
    const bool blocking = chance(2);
    try {
      if (!o.is_rw()) {
        o.plain->acquire(blocking, bad);
      } else if (chance(2)) {
        o.rw->acquire_read_lock(blocking, bad);
      } else {
        o.rw->acquire_write_lock(blocking, bad);
      }
      fail("an acquire with the timeout %f s did not throw", bad.count());
    } catch (const std::invalid_argument&) {
    }
    return;
  }
  // A moved-from object holds nothing and refuses everything; the moved-to one holds it all.
  const auto handle = o.native_handle();
  auto check_moved_from = [&](auto& from, auto& to) {
    if (from.native_handle() != -1 || !from.path().empty()) {
      fail("a moved-from lock object still has a handle or a path");
    }
    if (to.native_handle() != handle) fail("moving a lock object changed its handle");
    try {
      from.unlock();
      fail("unlock() of a moved-from lock object did not throw");
    } catch (const std::system_error& e) {
      if (!has_code(e, std::errc::operation_not_permitted)) {
        fail("unlock() of a moved-from lock object threw: %s", e.what());
      }
    }
    try {
      if (from.try_lock()) fail("try_lock() of a moved-from lock object succeeded");
      fail("try_lock() of a moved-from lock object did not throw");
    } catch (const std::system_error& e) {
      if (!has_code(e, std::errc::operation_not_permitted)) {
        fail("try_lock() of a moved-from lock object threw: %s", e.what());
      }
    }
  };
  if (o.is_rw()) {
    interprocess_reader_writer_lock to(std::move(*o.rw));
    if (o.rw->read_acquired() || o.rw->write_acquired()) fail("a moved-from object holds a lock");
    check_moved_from(*o.rw, to);
    *o.rw = std::move(to);
  } else {
    interprocess_lock to(std::move(*o.plain));
    if (o.plain->acquired()) fail("a moved-from object holds the lock");
    check_moved_from(*o.plain, to);
    *o.plain = std::move(to);
  }
}

void actor::op_move() {
  const int i = uniform(0, static_cast<int>(objects_.size()) - 1);
  auto& o = objects_[static_cast<std::size_t>(i)];
  book_.count(c_move);
  const auto handle = o.native_handle();
  if (o.is_rw()) {
    interprocess_reader_writer_lock moved(std::move(*o.rw));
    if (moved.native_handle() != handle) fail("moving changed the handle");
    o.rw.reset();
    o.rw.emplace(std::move(moved));
  } else {
    auto moved = std::move(*o.plain);
    if (moved.native_handle() != handle) fail("moving changed the handle");
    o.plain.emplace(std::move(moved));
  }
}

void actor::op_fork() {
  book_.count(c_fork);
  std::vector<std::intptr_t> handles;
  for (const auto& o : objects_) handles.push_back(o.native_handle());
  const pid_t child = ::fork();
  if (child == 0) ::_exit(fork_child(handles));
  if (child < 0) return;  // EAGAIN under load: nothing to check.
  const auto limit = steady::now() + k_child_limit;
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(child, &status, WNOHANG)) == 0 && steady::now() < limit) {
    std::this_thread::sleep_for(microseconds(500));
  }
  if (done == 0) {
    fail("fork child %d did not finish within %lld s; killing it", static_cast<int>(child),
         static_cast<long long>(k_child_limit.count()));
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
    return;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != k_exit_ok) {
    fail("fork child %d ended with status 0x%x", static_cast<int>(child), status);
  }
}

// In the child of a multi-threaded fork: only this thread exists. No timed waits (they start a
// helper thread); no locks of the parent's threads are touched.
int actor::fork_child(const std::vector<std::intptr_t>& handles) {
  rng_.seed(rng_() ^ static_cast<std::uint64_t>(::getpid()));
  const int failures = failures_;
  for (std::size_t i = 0; i < objects_.size(); ++i) {
    auto& o = objects_[i];
    const bool acquired =
        o.is_rw() ? o.rw->read_acquired() || o.rw->write_acquired() : o.plain->acquired();
    if (acquired || o.native_handle() != -1) {
      fail("fork child: an inherited object reports a lock or a handle");
    }
    if (o.held != mode::none) {
      try {
        call_release(o, o.held);
        fail("fork child: releasing an inherited %s lock did not throw", to_string(o.held));
      } catch (const std::system_error& e) {
        if (!has_code(e, std::errc::operation_not_permitted)) {
          fail("fork child: releasing an inherited lock threw: %s", e.what());
        }
      }
    }
    if (handles[i] >= 0 &&
        (::fcntl(static_cast<int>(handles[i]), F_GETFD) != -1 || errno != EBADF)) {
      fail("fork child: the parent's lock descriptor %d is still open",
           static_cast<int>(handles[i]));
    }
  }
  if (chance(2)) {
    book_.count(c_fork_child_lock);
    const int before = count_fds();
    {
      const int file = uniform(0, w_.opts_.files - 1);
      auto o = make_object(file);
      const auto m = random_mode(o);
      // Waiting is safe only if the parent thread, which waits for this child, holds nothing.
      const auto k = max_held_file() < 0 && chance(2) ? wait_kind::blocking : wait_kind::try_once;
      book_.begin_wait(slot_, index_, 1u << file, m, k == wait_kind::blocking ? 0 : now_ns(),
                       c_fork_child_lock);
      const char* how = "";
      const bool taken = call_acquire(o, m, k, timed_plan{}, how);
      if (taken) took(k_child_record, file, m, how);
      book_.end_wait(slot_, index_);
      if (taken) {
        pause();
        book_.check_held(slot_, index_, file, m, "fork child");
        releasing(k_child_record, file, m);
        call_release(o, m);
      } else if (k == wait_kind::blocking) {
        fail("fork child: blocking %s returned false", how);
      }
    }
    const int after = count_fds();
    if (after != before) {
      fail("fork child: %d descriptors before its lock, %d after:%s", before, after,
           list_fds().c_str());
    }
  }
  return failures_ == failures ? k_exit_ok : k_exit_failed;
}

void actor::op_exit() { w_.exit_while_all_run(); }

void actor::arrive_at_checkpoint() {
  release_all();
  objects_.clear();  // Destroys them all.
  w_.checkpoint();
  for (int i = 0; i < w_.opts_.objects; ++i) {
    objects_.push_back(make_object(uniform(0, w_.opts_.files - 1)));
  }
}

void actor::check_step(const char* when) {
  for (const auto& o : objects_) {
    const bool ok = o.is_rw() ? o.rw->read_acquired() == (o.held == mode::read) &&
                                    o.rw->write_acquired() == (o.held == mode::write)
                              : o.plain->acquired() == (o.held == mode::write);
    if (!ok) {
      fail("after %s: an object on file %d reports the wrong state (took %s)", when, o.file,
           to_string(o.held));
    }
    if ((o.native_handle() >= 0) != (o.held != mode::none)) {
      fail("after %s: native_handle() of an object on file %d is %lld (took %s)", when, o.file,
           static_cast<long long>(o.native_handle()), to_string(o.held));
    }
    if (o.held != mode::none) book_.check_held(slot_, index_, o.file, o.held, when);
  }
}

void actor::run() {
  while (!w_.stopping()) {
    if (w_.checkpoint_requested_.load()) arrive_at_checkpoint();
    const int r = uniform(0, 9999);
    const char* name = "?";
    try {
      if (r < 2) {
        op_exit();
      } else if (r < 30) {
        name = "fork";
        op_fork();
      } else if (r < 50 && index_ == 0) {
        w_.checkpoint_requested_.store(true);
        continue;
      } else {
        const int pick = uniform(0, 99);
        // clang-format off
        if (pick < 30)      { name = "acquire"; op_acquire(); }
        else if (pick < 54) { name = "release"; op_release(); }
        else if (pick < 58) { name = "hold"; op_hold(); }
        else if (pick < 62) { name = "destroy"; op_destroy(); }
        else if (pick < 68) { name = "guard scope"; op_guard_scope(); }
        else if (pick < 75) { name = "std lock scope"; op_std_lock_scope(); }
        else if (pick < 78) { name = "scoped_lock pair"; op_scoped_lock_pair(); }
        else if (pick < 84) { name = "shared object scope"; op_shared_object_scope(); }
        else if (pick < 89) { name = "deadlock probe"; op_deadlock_probe(); }
        else if (pick < 94) { name = "misuse probe"; op_misuse_probe(); }
        else                { name = "move"; op_move(); }
        // clang-format on
      }
      book_.count(c_ops);
      check_step(name);
    } catch (const std::exception& e) {
      fail("unexpected exception in %s: %s", name, e.what());
      auto& wait = book_.state().slots[slot_].threads[index_].wait;
      if (wait.seq.load() % 2) book_.end_wait(slot_, index_);
      // Start afresh: the destructors release whatever the objects still hold.
      for (int i = 0; i < static_cast<int>(objects_.size()); ++i) {
        auto& o = objects_[static_cast<std::size_t>(i)];
        if (o.held != mode::none) releasing(i, o.file, o.held);
        o.held = mode::none;
      }
      objects_.clear();
      for (int i = 0; i < w_.opts_.objects; ++i) {
        objects_.push_back(make_object(uniform(0, w_.opts_.files - 1)));
      }
    }
  }
  release_all();
  objects_.clear();
  w_.leave();
}

}  // namespace

int run_worker(const options& opts, shared_state& s, int slot, std::uint64_t seed) {
  worker w(opts, s, slot, seed);
  return w.run();
}

}  // namespace fasteners_random
