// A pool of detached threads that run one job at a time and wait idle a while between jobs.
#include "engine/thread_pool.hpp"

#include <chrono>
#include <new>

#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::engine {
namespace {

// How long a thread waits idle for another job before it ends.
constexpr auto idle_time = std::chrono::seconds(2);

// A thread of the pool. Its fields are guarded by the pool's mutex; it sleeps on its parker, which
// run_on_pool_thread() wakes after letting go of the mutex, so that a job costs one wake-up.
struct worker {
  void (*job)(void*) = nullptr;  // Set while a job waits for this worker.
  void* arg = nullptr;
  platform::parker parker;
  worker* next = nullptr;  // In the idle list.
};

struct pool {
  mutex mu;
  worker* idle FASTENERS_GUARDED_BY(mu) = nullptr;
};

void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;
void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;
void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;

// Never destroyed: jobs may run after static destruction.
pool& the_pool() {
  static auto* const p = [] {
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return new pool;
  }();
  return *p;
}

void unlink_idle(pool& p, worker* w) FASTENERS_REQUIRES(p.mu) {
  for (worker** link = &p.idle; *link != nullptr; link = &(*link)->next) {
    if (*link == w) {
      *link = w->next;
      return;
    }
  }
}

// Waits idle for the next job, at most idle_time; false if none came (the worker is unlisted).
bool next_job(pool& p, worker* w) {
  const auto until = std::chrono::steady_clock::now() + idle_time;
  {
    mutex_lock lock(p.mu);
    w->job = nullptr;
    w->next = p.idle;
    p.idle = w;
  }
  for (;;) {
    w->parker.park(until);
    mutex_lock lock(p.mu);
    if (w->job != nullptr) return true;
    if (std::chrono::steady_clock::now() >= until) {
      unlink_idle(p, w);
      return false;
    }
  }
}

void work(void* arg) {
  auto* w = static_cast<worker*>(arg);
  auto& p = the_pool();
  do {
    w->job(w->arg);
  } while (next_job(p, w));
  delete w;
}

// The idle worker that takes the job, or nullptr.
worker* assign(pool& p, void (*job)(void*), void* arg) {
  mutex_lock lock(p.mu);
  worker* w = p.idle;
  if (w == nullptr) return nullptr;
  p.idle = w->next;
  w->job = job;
  w->arg = arg;
  return w;
}

void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { the_pool().mu.lock(); }

void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { the_pool().mu.unlock(); }

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The idle threads are the parent's; their workers stay allocated, unused.
  auto& p = the_pool();
  p.idle = nullptr;
  p.mu.unlock();
}

}  // namespace

std::error_code run_on_pool_thread(void (*job)(void*), void* arg) noexcept {
  auto& p = the_pool();
  // Taken off the idle list, a worker stays until it has run the job: woken outside the mutex,
  // which it needs first.
  if (worker* w = assign(p, job, arg)) {
    w->parker.unpark();
    return {};
  }
  auto* w = new (std::nothrow) worker;
  if (w == nullptr) return std::make_error_code(std::errc::not_enough_memory);
  w->job = job;
  w->arg = arg;
  const auto error = platform::start_thread(&work, w);
  if (error) delete w;
  return error;
}

}  // namespace fasteners::detail::engine
