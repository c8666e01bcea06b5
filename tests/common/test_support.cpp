// The portable part of the test-support layer, the generic helper processes and the tests' main().
#include "common/test_support.hpp"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "fasteners/interprocess_semaphore.hpp"

namespace fasteners_test {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_helper_switch = "--fasteners-helper=";
constexpr int k_counter_width = 20;

std::map<std::string, helper_function>& helpers() {
  static std::map<std::string, helper_function> map;
  return map;
}

// The helper named on the command line runs instead of the tests; its exit code, if one was named.
std::optional<int> run_helper_if_asked(const std::vector<std::string>& args) {
  const std::string first = args.size() > 1 ? args[1] : "";
  if (first.rfind(k_helper_switch, 0) != 0) return std::nullopt;
  const std::string name = first.substr(std::char_traits<char>::length(k_helper_switch));
  const auto it = helpers().find(name);
  if (it == helpers().end()) return fail(2, "no helper named " + name);
  try {
    return it->second(std::vector<std::string>(args.begin() + 2, args.end()));
  } catch (const std::exception& e) {
    return fail(k_error, "helper " + name + " threw: " + e.what());
  }
}

}  // namespace

std::string arg_of(const fs::path& path) { return path.u8string(); }

fs::path path_of(const std::string& arg) { return fs::u8path(arg); }

std::vector<std::string> helper_command(const std::string& name,
                                        const std::vector<std::string>& args) {
  std::vector<std::string> argv = {this_program(), k_helper_switch + name};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

child_process spawn_helper(const std::string& name, const std::vector<std::string>& args) {
  return child_process(helper_command(name, args));
}

int run_helper(const std::string& name, const std::vector<std::string>& args,
               std::chrono::milliseconds timeout) {
  child_process child = spawn_helper(name, args);
  return child.finish(timeout);
}

int try_in_child(kind k, const fs::path& path) {
  return run_helper("try", {to_string(k), arg_of(path)});
}

child_process hold_in_child(kind k, const fs::path& path) {
  child_process child = spawn_helper("hold", {to_string(k), arg_of(path)});
  const auto line = child.read_line();
  EXPECT_EQ(line, std::optional<std::string>("held"))
      << "the helper did not report holding a " << to_string(k) << " lock on " << path;
  return child;
}

bool wait_for_waiting_writer(const fs::path& path) {
  fasteners::interprocess_reader_writer_lock probe(path);
  const auto deadline = steady::now() + k_long;
  while (steady::now() < deadline) {
    // A thread that holds nothing, so that the probe never joins a read lock it holds itself.
    const bool free = on_other_thread([&] {
      if (!probe.try_lock_shared()) return false;
      probe.unlock_shared();
      return true;
    });
    if (!free) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

bool register_helper(const char* name, helper_function f) {
  helpers()[name] = f;
  return true;
}

int fail(int code, const std::string& message) {
  std::cerr << "helper failed (" << code << "): " << message << std::endl;
  return code;
}

void report_and_wait(const std::string& line) {
  std::cout << line << std::endl;
  std::string ignored;
  while (std::getline(std::cin, ignored)) {
  }
}

bool names(const std::exception& e, const fs::path& path) {
  return std::string(e.what()).find(arg_of(path)) != std::string::npos;
}

int check_error_naming(const fs::path& path, const std::function<void()>& f,
                       const std::string& what, std::optional<std::errc> expected) {
  try {
    f();
    return fail(40, what + " returned instead of throwing");
  } catch (const std::system_error& e) {
    if (!names(e, path)) return fail(41, what + ": what() does not name the path: " + e.what());
    if (expected && e.code() != *expected) {
      return fail(42, what + ": unexpected error " + e.code().message() + ": " + e.what());
    }
  }
  return 0;
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    const auto newline = output_.find('\n');
    if (newline != std::string::npos) {
      std::string line = output_.substr(0, newline);
      output_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();  // Windows' text mode
      return line;
    }
    if (!read_output(deadline)) return std::nullopt;
  }
}

int child_process::finish(std::chrono::milliseconds timeout) {
  close_stdin();
  return wait(timeout);
}

void write_counter(const fs::path& path, long value) {
  char text[k_counter_width + 1];
  std::snprintf(text, sizeof text, "%020ld", value);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write the counter " + arg_of(path));
}

long read_counter(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  long value = -1;
  if (!(in >> value)) return -1;
  return value;
}

void occupancy::enter_exclusive() {
  if (writers_.fetch_add(1) != 0 || readers_.load() != 0) violated_ = true;
}

void occupancy::enter_shared() {
  const int now = readers_.fetch_add(1) + 1;
  int max = max_readers_.load();
  while (now > max && !max_readers_.compare_exchange_weak(max, now)) {
  }
  if (writers_.load() != 0) violated_ = true;
}

void latch::count_down() {
  std::lock_guard<std::mutex> guard(mutex_);
  if (count_ > 0 && --count_ == 0) cv_.notify_all();
}

bool latch::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard(mutex_);
  return cv_.wait_for(guard, timeout, [this] { return count_ == 0; });
}

thread_holder::thread_holder(std::function<bool()> acquire, std::function<void()> release) {
  thread_ = std::thread([this, acquire = std::move(acquire), release = std::move(release)] {
    bool got = false;
    try {
      got = acquire();
    } catch (const std::exception& e) {
      std::cerr << "thread_holder: acquire threw: " << e.what() << std::endl;
    }
    std::unique_lock<std::mutex> guard(mutex_);
    state_ = got ? state::held : state::failed;
    cv_.notify_all();
    cv_.wait(guard, [this] { return state_ == state::releasing; });
    if (got) {
      guard.unlock();
      try {
        release();
      } catch (const std::exception& e) {
        std::cerr << "thread_holder: release threw: " << e.what() << std::endl;
        guard.lock();
        ok_ = false;
        return;
      }
    }
  });
}

thread_holder::~thread_holder() { release(); }

bool thread_holder::wait_held(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard(mutex_);
  cv_.wait_for(guard, timeout, [this] { return state_ != state::acquiring; });
  return state_ == state::held;
}

bool thread_holder::done_acquiring() {
  std::lock_guard<std::mutex> guard(mutex_);
  return state_ != state::acquiring;
}

bool thread_holder::release() {
  if (!thread_.joinable()) return ok_;
  {
    std::unique_lock<std::mutex> guard(mutex_);
    // A thread still waiting for its lock cannot be stopped; wait for it.
    cv_.wait(guard, [this] { return state_ != state::acquiring; });
    state_ = state::releasing;
    cv_.notify_all();
  }
  thread_.join();
  return ok_;
}

// Helper "try KIND PATH": tries once; exits k_acquired (after releasing) or k_busy.
FASTENERS_TEST_HELPER(try) {
  kind_lock lock(parse_kind(args.at(0)), path_of(args.at(1)));
  if (!lock.acquire(false)) return k_busy;
  lock.release();
  return k_acquired;
}

// Helper "hold KIND PATH": takes the lock, prints "held", releases when stdin ends.
FASTENERS_TEST_HELPER(hold) {
  kind_lock lock(parse_kind(args.at(0)), path_of(args.at(1)));
  if (!lock.acquire()) return fail(1, "blocking acquire returned false");
  report_and_wait("held");
  lock.release();
  return 0;
}

// Helper "sem_hold PATH N K": see test_support.hpp.
FASTENERS_TEST_HELPER(sem_hold) {
  fasteners::interprocess_semaphore sem(path_of(args.at(0)), std::stoul(args.at(1)));
  const std::size_t k = std::stoul(args.at(2));
  for (std::size_t i = 0; i < k; ++i) sem.acquire();
  if (sem.held() != k) return fail(1, "held() is not the number of slots taken");
  report_and_wait("held");
  for (std::size_t i = 0; i < k; ++i) sem.release();
  return 0;
}

child_process hold_slots_in_child(const fs::path& path, std::size_t n, std::size_t k) {
  child_process child =
      spawn_helper("sem_hold", {arg_of(path), std::to_string(n), std::to_string(k)});
  EXPECT_EQ(child.read_line(), std::optional<std::string>("held"));
  return child;
}

// Helper "expect_error KIND PATH": see test_support.hpp.
FASTENERS_TEST_HELPER(expect_error) {
  const fs::path path = path_of(args.at(1));
  kind_lock lock(parse_kind(args.at(0)), path);
  int code = check_error_naming(
      path, [&] { lock.acquire(); }, "a blocking acquire");
  if (code == 0)
    code = check_error_naming(
        path, [&] { lock.acquire(false); }, "a try");
  if (code == 0) {
    code = check_error_naming(
        path, [&] { lock.acquire(true, std::chrono::duration<double>(0.1)); }, "a timed acquire");
  }
  if (code == 0 && lock.held()) code = fail(43, "the lock says it is held after errors");
  return code;
}

}  // namespace fasteners_test

// Runs a helper when called with --fasteners-helper=NAME ARGS..., the tests otherwise.
int main(int argc, char** argv) {
  using namespace fasteners_test;
  if (const auto code = run_helper_if_asked(command_line(argc, argv))) return *code;
  prepare_test_process();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
