// The locks the benchmark compares: this library, raw fcntl, Boost.Interprocess, python-fasteners.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fasteners_bench {

enum class contender_id {
  raw_ofd,                   // fcntl(F_OFD_SETLKW) on a descriptor opened once.
  fasteners_lock,            // fasteners::interprocess_lock::lock()
  fasteners_lock_keep_open,  // The same with lock_options::keep_open.
  fasteners_try_lock,        // fasteners::interprocess_lock::try_lock_for()
  fasteners_async_lock,      // fasteners::interprocess_lock::async_lock(): to its handler.
  boost_lock,                // boost::interprocess::file_lock::lock()
  boost_timed_lock,          // boost::interprocess::file_lock::timed_lock()
  python_acquire,            // python-fasteners InterProcessLock.acquire()
  python_acquire_timeout,    // python-fasteners InterProcessLock.acquire(timeout=...)
  plain_sleep,               // No lock: a timed wait sleeps; section 5's baseline alone.
};

struct contender {
  contender_id id;
  const char* key;       // For the command line, CSV and JSON.
  const char* label;     // For the table and the plot.
  bool timed;            // Waits with a timeout.
  bool waits_in_kernel;  // Blocks in F_*SETLKW (so /proc/locks shows it waiting).
  bool python;
  bool boost;
};

const std::vector<contender>& all_contenders();
const contender& contender_of(contender_id id);
// Throws std::invalid_argument for an unknown key.
const contender& contender_by_key(std::string_view key);

// Whether Boost.Interprocess was found when this program was built.
bool boost_built_in();
std::string boost_version();

// One lock on one file through one contender's API, in this process.
class bench_lock {
 public:
  virtual ~bench_lock() = default;
  // Waits as long as needed (timeout_ns < 0) or at most timeout_ns; returns whether it acquired.
  virtual bool acquire(std::int64_t timeout_ns) = 0;
  virtual void release() = 0;
  // When the last acquire was granted, if the lock tells (an asynchronous acquisition's handler
  // ran then, before the acquiring thread woke): now_ns(), or 0 if it does not tell.
  virtual std::int64_t granted_ns() const { return 0; }
};

// The lock of a contender. plain_sleep's takes nothing: a timed acquire sleeps for its timeout
// and acquires nothing, an untimed one returns at once. python-fasteners cannot run in this
// process: its kinds get a classic fcntl lock, which is what python-fasteners takes (lockf) and
// releases (lockf(LOCK_UN)).
std::unique_ptr<bench_lock> make_lock(contender_id id, const std::string& path);

// The Python program that plays a python-fasteners waiter: `python3 -c <script> PATH TIMEOUT_NS`.
const char* python_waiter_script();

}  // namespace fasteners_bench
