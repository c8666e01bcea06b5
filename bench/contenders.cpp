// The contenders' locks behind one small interface, and the python-fasteners waiter program.
#include "contenders.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "common.hpp"
#include "fasteners/interprocess_lock.hpp"

#if FASTENERS_BENCH_HAVE_BOOST
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/sync/file_lock.hpp>
#include <boost/version.hpp>
#endif

namespace fasteners_bench {
namespace {

const std::vector<contender> contenders = {
    {contender_id::plain_sleep, "plain_sleep", "plain sleep (baseline)", true, false, false, false},
    {contender_id::raw_ofd, "raw_ofd", "raw F_OFD_SETLKW", false, true, false, false},
    {contender_id::fasteners_lock, "fasteners_lock", "fasteners lock()", false, true, false, false},
    {contender_id::fasteners_lock_keep_open, "fasteners_lock_keep_open",
     "fasteners lock(), keep_open", false, true, false, false},
    {contender_id::fasteners_try_lock, "fasteners_try_lock_for", "fasteners try_lock_for()", true,
     true, false, false},
    {contender_id::fasteners_async_lock, "fasteners_async_lock", "fasteners async_lock()", false,
     true, false, false},
    {contender_id::boost_lock, "boost_lock", "Boost file_lock::lock()", false, true, false, true},
    {contender_id::boost_timed_lock, "boost_timed_lock", "Boost file_lock::timed_lock()", true,
     false, false, true},
    {contender_id::python_acquire, "python_acquire", "python-fasteners acquire()", false, false,
     true, false},
    {contender_id::python_acquire_timeout, "python_acquire_timeout",
     "python-fasteners acquire(timeout)", true, false, true, false},
};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::system_category(), what);
}

int open_lock_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) throw_errno("open " + path);
  return fd;
}

// One fcntl lock command on the whole file, retried on EINTR; returns 0 or an errno value.
int fcntl_whole_file(int fd, int command, short type) {
  for (;;) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, command, &fl) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// A plain fcntl loop on a descriptor opened once: F_OFD_SETLKW (open-file-description locks, as
// this library takes) or F_SETLKW (classic process-owned locks, as python-fasteners takes).
class fcntl_lock final : public bench_lock {
 public:
  fcntl_lock(const std::string& path, bool ofd)
      : fd_(open_lock_file(path)),
        wait_(ofd ? F_OFD_SETLKW : F_SETLKW),
        set_(ofd ? F_OFD_SETLK : F_SETLK) {}
  ~fcntl_lock() override { ::close(fd_); }
  fcntl_lock(const fcntl_lock&) = delete;
  fcntl_lock& operator=(const fcntl_lock&) = delete;
  bool acquire(std::int64_t) override {
    if (const int error = fcntl_whole_file(fd_, wait_, F_WRLCK)) {
      throw std::system_error(error, std::system_category(), "fcntl lock");
    }
    return true;
  }
  void release() override {
    if (const int error = fcntl_whole_file(fd_, set_, F_UNLCK)) {
      throw std::system_error(error, std::system_category(), "fcntl unlock");
    }
  }

 private:
  const int fd_;
  const int wait_;
  const int set_;
};

class library_lock final : public bench_lock {
 public:
  library_lock(const std::string& path, bool keep_open) : lock_(path, options(keep_open)) {}
  bool acquire(std::int64_t timeout_ns) override {
    if (timeout_ns < 0) {
      lock_.lock();
      return true;
    }
    return lock_.try_lock_for(std::chrono::nanoseconds(timeout_ns));
  }
  void release() override { lock_.unlock(); }

 private:
  static fasteners::lock_options options(bool keep_open) {
    fasteners::lock_options o;
    o.keep_open = keep_open;
    return o;
  }
  fasteners::interprocess_lock lock_;
};

// async_lock(): the acquiring thread sleeps until the handler, which notes the time it ran, wakes
// it; the hand-off is measured to the handler.
class library_async_lock final : public bench_lock {
 public:
  explicit library_async_lock(const std::string& path) : lock_(path) {}
  bool acquire(std::int64_t) override {
    std::unique_lock<std::mutex> lock(mu_);
    done_ = false;
    auto pending = lock_.async_lock([this](std::error_code ec) {
      const std::int64_t now = now_ns();
      std::lock_guard<std::mutex> guard(mu_);
      granted_ns_ = now;
      granted_ = !ec;
      done_ = true;
      cv_.notify_one();
    });
    cv_.wait(lock, [&] { return done_; });
    return granted_;
  }
  void release() override { lock_.unlock(); }
  std::int64_t granted_ns() const override { return granted_ns_; }

 private:
  fasteners::interprocess_lock lock_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool granted_ = false;
  std::int64_t granted_ns_ = 0;
};

// No lock at all: how late a plain clock_nanosleep of the same timeout wakes.
class sleep_lock final : public bench_lock {
 public:
  bool acquire(std::int64_t timeout_ns) override {
    if (timeout_ns < 0) return true;
    sleep_for_ns(timeout_ns);
    return false;
  }
  void release() override {}
};

#if FASTENERS_BENCH_HAVE_BOOST
// Boost's file_lock opens an existing file only.
const char* existing(const std::string& path) {
  ::close(open_lock_file(path));
  return path.c_str();
}

class boost_file_lock final : public bench_lock {
 public:
  explicit boost_file_lock(const std::string& path) : lock_(existing(path)) {}
  bool acquire(std::int64_t timeout_ns) override {
    if (timeout_ns < 0) {
      lock_.lock();
      return true;
    }
    const auto deadline = boost::posix_time::microsec_clock::universal_time() +
                          boost::posix_time::microseconds(timeout_ns / 1000);
    return lock_.timed_lock(deadline);
  }
  void release() override { lock_.unlock(); }

 private:
  boost::interprocess::file_lock lock_;
};
#endif

}  // namespace

const std::vector<contender>& all_contenders() { return contenders; }

const contender& contender_of(contender_id id) {
  for (const auto& c : contenders) {
    if (c.id == id) return c;
  }
  throw std::invalid_argument("unknown contender");
}

const contender& contender_by_key(std::string_view key) {
  for (const auto& c : contenders) {
    if (key == c.key) return c;
  }
  throw std::invalid_argument("unknown contender '" + std::string(key) + "'");
}

bool boost_built_in() { return FASTENERS_BENCH_HAVE_BOOST != 0; }

std::string boost_version() {
#if FASTENERS_BENCH_HAVE_BOOST
  return std::to_string(BOOST_VERSION / 100000) + "." + std::to_string(BOOST_VERSION / 100 % 1000) +
         "." + std::to_string(BOOST_VERSION % 100);
#else
  return "";
#endif
}

std::unique_ptr<bench_lock> make_lock(contender_id id, const std::string& path) {
  switch (id) {
    case contender_id::raw_ofd:
      return std::make_unique<fcntl_lock>(path, true);
    case contender_id::fasteners_lock:
    case contender_id::fasteners_try_lock:
      return std::make_unique<library_lock>(path, false);
    case contender_id::fasteners_async_lock:
      return std::make_unique<library_async_lock>(path);
    case contender_id::fasteners_lock_keep_open:
      return std::make_unique<library_lock>(path, true);
    case contender_id::boost_lock:
    case contender_id::boost_timed_lock:
#if FASTENERS_BENCH_HAVE_BOOST
      return std::make_unique<boost_file_lock>(path);
#else
      throw std::invalid_argument("this benchmark was built without Boost.Interprocess");
#endif
    case contender_id::python_acquire:
    case contender_id::python_acquire_timeout:
      return std::make_unique<fcntl_lock>(path, false);
    case contender_id::plain_sleep:
      return std::make_unique<sleep_lock>();
  }
  throw std::invalid_argument("unknown contender");
}

const char* python_waiter_script() {
  // Reads 'g' (wait once) or EOF/'q' (quit) on stdin; writes 'w' just before it waits and a
  // wait_record (four native int64s) after it has released what it acquired.
  return R"(
import os, struct, sys, time
import fasteners
lock = fasteners.InterProcessLock(sys.argv[1])
timeout_ns = int(sys.argv[2])
timeout = None if timeout_ns < 0 else timeout_ns / 1e9
clock = time.CLOCK_MONOTONIC
while os.read(0, 1) == b'g':
    os.write(1, b'w')
    start = time.clock_gettime_ns(clock)
    cpu = time.process_time_ns()
    acquired = lock.acquire(blocking=True, timeout=timeout)
    end = time.clock_gettime_ns(clock)
    cpu = time.process_time_ns() - cpu
    if acquired:
        lock.release()
    os.write(1, struct.pack('=qqqq', start, end, cpu, 1 if acquired else 0))
)";
}

}  // namespace fasteners_bench
