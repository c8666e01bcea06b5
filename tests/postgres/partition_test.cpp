// PostgreSQL locks over TCP, against servers of the tests' own: the TCP settings on both ends of a
// session, a network partition cutting off a waiting client (a network namespace joined by a veth
// pair, cut by blackhole routes both ways; needs root), and a server that stops.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"
#include "fasteners/postgres.hpp"
#include "pg_test_support.hpp"

namespace fasteners_test {
namespace {

namespace pg = fasteners::test::pg;
using fasteners::postgres_lock;
using fasteners::postgres_options;

// Short keepalives, so that a lost peer is noticed within seconds: 2 + 1 * 2 = 4 s.
postgres_options short_keepalives() {
  postgres_options o;
  o.keepalives_idle = 2;
  o.keepalives_interval = 1;
  o.keepalives_count = 2;
  return o;
}
constexpr int k_short_keepalive_seconds = 4;

// Runs `ip ARGS...`; throws std::runtime_error if it fails, unless `may_fail` (then quietly).
void ip(const std::vector<std::string>& args, bool may_fail = false) {
  std::vector<std::string> argv{"/bin/sh", "-c",
                                may_fail ? "exec ip \"$@\" 2>/dev/null" : "exec ip \"$@\"", "ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  child_process p(argv);
  p.close_stdin();
  while (p.read_line()) {
  }
  const int code = p.wait();
  if (code != 0 && !may_fail) {
    std::string command = "ip";
    for (const auto& a : args) command += " " + a;
    throw std::runtime_error(command + " failed with exit code " + std::to_string(code));
  }
}

// The names of this machine's network namespaces.
std::vector<std::string> namespaces() {
  std::vector<std::string> names;
  child_process p({"/usr/bin/env", "ip", "netns", "list"});
  p.close_stdin();
  while (const auto line = p.read_line()) names.push_back(line->substr(0, line->find(' ')));
  p.wait();
  return names;
}

// A network namespace with the far end of a veth pair, on a /30 of its own in 10.213.0.0/16: the
// server side has .1 (host_address), the namespace .2. Named after this process, so that runs
// side by side never share one; those of dead test processes are removed first. Removed on
// destruction, with the routes that cut it off.
class veth_namespace {
 public:
  veth_namespace() {
    remove_leftovers();
    const int slot = static_cast<int>(::getpid() % 16000);
    network_ = address(slot, 0) + "/30";
    host_address_ = address(slot, 1);
    inner_address_ = address(slot, 2);
    const std::string id = std::to_string(::getpid());
    name_ = "fxpg" + id;
    host_link_ = "fxh" + id;
    ip({"netns", "add", name_});
    created_ = true;
    ip({"link", "add", host_link_, "type", "veth", "peer", "name", "fxn" + id, "netns", name_});
    ip({"addr", "add", host_address_ + "/30", "dev", host_link_});
    ip({"link", "set", host_link_, "up"});
    ip({"-n", name_, "addr", "add", inner_address_ + "/30", "dev", "fxn" + id});
    ip({"-n", name_, "link", "set", "fxn" + id, "up"});
    ip({"-n", name_, "link", "set", "lo", "up"});
    ip({"route", "del", "blackhole", inner_address_ + "/32"}, true);  // Left by a crash.
  }
  ~veth_namespace() {
    if (cut_) ip({"route", "del", "blackhole", inner_address_ + "/32"}, true);
    if (!created_) return;
    // Removing one end removes the pair. The namespace itself lingers, nameless, while sockets of
    // the cut-off connection in it wait for their retransmissions to end.
    ip({"link", "delete", host_link_}, true);
    ip({"netns", "delete", name_}, true);
  }
  veth_namespace(const veth_namespace&) = delete;
  veth_namespace& operator=(const veth_namespace&) = delete;

  // Cuts the link both ways: packets to the other side are dropped on each side.
  void cut() {
    cut_ = true;
    ip({"route", "replace", "blackhole", inner_address_ + "/32"});
    ip({"-n", name_, "route", "replace", "blackhole", host_address_ + "/32"});
  }
  // `argv` run inside the namespace.
  std::vector<std::string> inside(const std::vector<std::string>& argv) const {
    std::vector<std::string> out{"/usr/bin/env", "ip", "netns", "exec", name_};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }
  const std::string& host_address() const { return host_address_; }
  const std::string& network() const { return network_; }

 private:
  static std::string address(int slot, int host) {
    return "10.213." + std::to_string(slot / 64) + "." + std::to_string(slot % 64 * 4 + host);
  }
  static void remove_leftovers() {
    for (const auto& name : namespaces()) {
      if (name.rfind("fxpg", 0) != 0 || name.size() == 4) continue;
      const std::string pid = name.substr(4);
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      if (::kill(std::stoi(pid), 0) != 0 && errno == ESRCH) {
        ip({"link", "delete", "fxh" + pid}, true);
        ip({"netns", "delete", name}, true);
      }
    }
  }

  std::string name_;
  std::string host_link_;
  std::string network_;
  std::string host_address_;
  std::string inner_address_;
  bool created_ = false;
  bool cut_ = false;
};

// Helper "pg_cut_off_waiter CONNINFO NAME": waits for the lock with short keepalives; prints
// "granted", or "error CODE MESSAGE" when the wait fails; then waits for stdin to end.
FASTENERS_TEST_HELPER(pg_cut_off_waiter) {
  postgres_lock lock(args.at(0), args.at(1), short_keepalives());
  try {
    lock.lock();
    report_and_wait("granted");
  } catch (const std::system_error& e) {
    report_and_wait("error " + std::to_string(e.code().value()) + " " + e.what());
  }
  return 0;
}

// Helper "pg_cut_off_holder CONNINFO NAME": holds the lock with short keepalives and an on_lost
// handler; prints "holding", then "lost" once the handler ran (or "not told" after 60 s), then
// waits for stdin to end.
FASTENERS_TEST_HELPER(pg_cut_off_holder) {
  std::mutex mu;
  std::condition_variable told;
  bool lost = false;
  postgres_options options = short_keepalives();
  options.on_lost = [&](const std::string&) {
    const std::lock_guard<std::mutex> guard(mu);
    lost = true;
    told.notify_all();
  };
  postgres_lock lock(args.at(0), args.at(1), options);
  lock.lock();
  std::cout << "holding" << std::endl;
  bool in_time = false;
  {
    std::unique_lock<std::mutex> guard(mu);
    in_time = told.wait_for(guard, 60s, [&] { return lost; });
  }
  report_and_wait(!in_time ? "not told" : lock.acquired() ? "lost, yet acquired" : "lost");
  return 0;
}

// The number of advisory locks on `key` with granted = `granted` on the server of `conninfo`.
int advisory_locks_at(const std::string& conninfo, std::int64_t key, bool granted) {
  const auto bits = static_cast<std::uint64_t>(key);
  return std::stoi(pg::connection(conninfo).query(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND classid = " +
      std::to_string(bits >> 32) +
      "::bigint::oid AND objid = " + std::to_string(bits & 0xffffffffU) +
      "::bigint::oid AND granted = " + (granted ? "true" : "false")));
}

// Whether advisory_locks_at(...) reaches `count` within `timeout`.
bool wait_for_locks_at(const std::string& conninfo, std::int64_t key, bool granted, int count,
                       std::chrono::milliseconds timeout = k_long) {
  const auto until = steady::now() + timeout;
  while (advisory_locks_at(conninfo, key, granted) != count) {
    if (steady::now() >= until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// Tries `lock` every 100 ms until it takes it, at most `bound` seconds after `since`: how long
// after `since` it did, or nullopt.
std::optional<double> seconds_until_taken(postgres_lock& lock, steady::time_point since,
                                          double bound) {
  while (!lock.try_lock()) {
    if (seconds_since(since) >= bound) return std::nullopt;
    std::this_thread::sleep_for(100ms);
  }
  const double taken = seconds_since(since);
  lock.unlock();
  return taken;
}

// ---------------------------------------------------------------------------------------------
// A network partition.

TEST(partition, a_cut_off_waiter_that_is_granted_the_lock_loses_it_within_the_keepalive_time) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root: it makes a network namespace, a veth pair and blackhole routes "
                    "(ip netns, ip link, ip route) to cut a client off for real";
  }
  veth_namespace net;
  pg::private_server server(net.host_address(), net.network());
  const std::string name = pg::unique_name();
  const std::int64_t key = fasteners::postgres_key(name);
  postgres_lock holder(server.conninfo(), name);
  holder.lock();
  // The waiter reaches the server over the veth pair, and waits in its lock queue.
  child_process waiter(
      net.inside(helper_command("pg_cut_off_waiter", {server.tcp_conninfo(), name})));
  ASSERT_TRUE(wait_for_locks_at(server.conninfo(), key, false, 1)) << "the waiter never queued";
  net.cut();
  // The server grants the lock to the cut-off session and sends the answer into the void: its
  // keepalives stop while sent data waits for an acknowledgement.
  holder.unlock();
  const auto released = steady::now();
  ASSERT_TRUE(wait_for_locks_at(server.conninfo(), key, true, 1, 5s)) << "no grant to the waiter";
  const double bound = k_short_keepalive_seconds + 15.0;
  postgres_lock other(server.conninfo(), name);
  const auto taken = seconds_until_taken(other, released, bound);
  std::cout << "the lock of the cut-off waiter was "
            << (taken ? "free " + std::to_string(*taken) : "still held " + std::to_string(bound))
            << " s after the release\n";
  EXPECT_TRUE(taken) << "another client could not take the lock " << bound
                     << " s after the release: the server still holds it for the cut-off waiter";
  // The waiter itself learns that its session is gone (its keepalives), and says so.
  const auto report = waiter.read_line(std::chrono::seconds(static_cast<int>(bound)));
  ASSERT_TRUE(report) << "the cut-off waiter reported nothing";
  EXPECT_EQ(report->rfind("error ", 0), 0U) << *report;
  EXPECT_EQ(report->find("locks it held were lost"), std::string::npos) << *report;
}

// A holder cut off while idle is told through on_lost once its keepalives go unanswered.
TEST(partition, a_cut_off_holders_on_lost_runs_within_the_keepalive_time) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root: it makes a network namespace, a veth pair and blackhole routes "
                    "(ip netns, ip link, ip route) to cut a client off for real";
  }
  veth_namespace net;
  pg::private_server server(net.host_address(), net.network());
  const std::string name = pg::unique_name();
  child_process holder(
      net.inside(helper_command("pg_cut_off_holder", {server.tcp_conninfo(), name})));
  const auto holding = holder.read_line();
  ASSERT_TRUE(holding) << "the holder reported nothing";
  ASSERT_EQ(*holding, "holding");
  net.cut();
  const auto cut = steady::now();
  const double bound = k_short_keepalive_seconds + 10.0;
  const auto report = holder.read_line(std::chrono::seconds(static_cast<int>(bound)));
  const double after = seconds_since(cut);
  ASSERT_TRUE(report) << "the cut-off holder was not told within " << bound << " s";
  EXPECT_EQ(*report, "lost");
  std::cout << "on_lost of the cut-off holder ran " << after << " s after the cut (keepalive time "
            << k_short_keepalive_seconds << " s)\n";
  EXPECT_LE(after, k_short_keepalive_seconds + 2.0);
}

// A TCP proxy in a process group of its own, from a port of 127.0.0.1 to `target_port` there: one
// process per connection, forwarding both ways. Killed (the group) on destruction.
class tcp_proxy {
 public:
  explicit tcp_proxy(int target_port) {
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof a;
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&a), size) != 0 ||
        ::listen(listener, 8) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &size) != 0) {
      throw std::system_error(errno, std::generic_category(), "tcp_proxy");
    }
    port_ = ntohs(a.sin_port);
    pid_ = ::fork();
    if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      for (;;) {
        const int client = ::accept(listener, nullptr, nullptr);
        if (client < 0) continue;
        if (::fork() == 0) forward(client, target_port);
        ::close(client);
      }
    }
    ::setpgid(pid_, pid_);
    ::close(listener);
  }
  ~tcp_proxy() {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;

  int port() const { return port_; }
  // Stops (SIGSTOP) or resumes (SIGCONT) every process of the proxy.
  void signal(int sig) const { ::kill(-pid_, sig); }

 private:
  [[noreturn]] static void forward(int client, int target_port) {
    const int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(target_port));
    if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) ::_exit(1);
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    char buffer[16384];
    for (;;) {
      if (::poll(fds, 2, -1) < 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].revents == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
        if (n <= 0) ::_exit(0);
        for (ssize_t sent = 0; sent < n;) {
          const ssize_t w =
              ::write(fds[1 - i].fd, buffer + sent, static_cast<std::size_t>(n - sent));
          if (w <= 0) ::_exit(0);
          sent += w;
        }
      }
    }
  }

  int port_ = 0;
  pid_t pid_ = -1;
};

// What on_lost cannot see: a frozen proxy between client and server (stopped with SIGSTOP) still
// has a kernel that acknowledges both sides' keepalives, so neither side finds the session gone,
// and the lock stays held on the server. (A real partition is seen: see the test above.)
TEST(partition, through_a_frozen_proxy_nothing_is_lost_and_on_lost_stays_quiet) {
  pg::private_server server("127.0.0.1", "127.0.0.1/32");
  const std::string direct = server.tcp_conninfo();
  const int server_port = std::stoi(direct.substr(direct.find("port=") + 5));
  tcp_proxy proxy(server_port);
  std::atomic<int> calls{0};
  postgres_options options = short_keepalives();
  options.on_lost = [&](const std::string&) { ++calls; };
  const std::string name = pg::unique_name();
  postgres_lock lock(direct + " port=" + std::to_string(proxy.port()), name, options);
  lock.lock();
  const std::int64_t key = fasteners::postgres_key(name);
  proxy.signal(SIGSTOP);
  std::this_thread::sleep_for(std::chrono::seconds(k_short_keepalive_seconds + 3));
  EXPECT_EQ(calls.load(), 0) << "on_lost was called through a stopped proxy";
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(advisory_locks_at(server.conninfo(), key, true), 1)
      << "the server let go of the lock held through a stopped proxy";
  std::cout << "through a proxy stopped for " << k_short_keepalive_seconds + 3
            << " s (keepalive time " << k_short_keepalive_seconds << " s): on_lost calls "
            << calls.load() << ", the server still holds the lock\n";
  proxy.signal(SIGCONT);
  lock.unlock();
  EXPECT_EQ(calls.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// The TCP settings of a session, on both ends.

int socket_option(int fd, int level, int option) {
  int value = -1;
  socklen_t size = sizeof value;
  if (::getsockopt(fd, level, option, &value, &size) != 0) {
    throw std::system_error(errno, std::generic_category(), "getsockopt");
  }
  return value;
}

int local_port(int fd) {
  sockaddr_in a{};
  socklen_t size = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size) != 0) return -1;
  return ntohs(a.sin_port);
}

int peer_port(int fd) {
  sockaddr_in a{};
  socklen_t size = sizeof a;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &size) != 0) return -1;
  return ntohs(a.sin_port);
}

// A copy of the socket through which the server process `pid` talks to the client at
// `client_port`; nullopt if this process may not take it (pidfd_getfd: ptrace rights over it).
std::optional<int> server_socket(int pid, int client_port) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return std::nullopt;
  std::optional<int> found;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  for (dirent* e = d != nullptr ? ::readdir(d) : nullptr; e != nullptr && !found;
       e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, std::stoi(e->d_name), 0));
    if (fd < 0) continue;
    int protocol = 0;
    socklen_t size = sizeof protocol;
    if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &size) == 0 &&
        protocol == IPPROTO_TCP && peer_port(fd) == client_port) {
      found = fd;
    } else {
      ::close(fd);
    }
  }
  if (d != nullptr) ::closedir(d);
  ::close(pidfd);
  return found;
}

struct tcp_case {
  std::string what;
  postgres_options options;
  int user_timeout_ms;  // Expected on both ends.
  int keepalive_idle;   // Expected on the client's socket.
};

std::vector<tcp_case> tcp_cases() {
  postgres_options explicit_timeout = short_keepalives();
  explicit_timeout.tcp_user_timeout = 7000;
  return {{"defaults", {}, 25000, 10},
          {"short keepalives", short_keepalives(), k_short_keepalive_seconds * 1000, 2},
          {"tcp_user_timeout given", explicit_timeout, 7000, 2}};
}

// Runs `check` on a lock held over TCP with the options of each case, on a server of its own
// (whose Unix-socket conninfo it gets); false as soon as `check` says it cannot check.
using tcp_check = std::function<bool(const tcp_case&, postgres_lock&, const std::string&)>;
bool for_each_tcp_case(const tcp_check& check) {
  pg::private_server server("127.0.0.1", "127.0.0.1/32");
  for (const auto& c : tcp_cases()) {
    SCOPED_TRACE(c.what);
    postgres_lock lock(server.tcp_conninfo(), pg::unique_name(), c.options);
    lock.lock();
    if (!check(c, lock, server.conninfo())) return false;
    lock.unlock();
  }
  return true;
}

TEST(tcp_settings, the_client_socket_has_keepalives_and_the_keepalive_time_as_user_timeout) {
  for_each_tcp_case([](const tcp_case& c, postgres_lock& lock, const std::string&) {
    const int fd = static_cast<int>(lock.native_handle());
    EXPECT_EQ(socket_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), c.user_timeout_ms);
    EXPECT_EQ(socket_option(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    EXPECT_EQ(socket_option(fd, IPPROTO_TCP, TCP_KEEPIDLE), c.keepalive_idle);
    return true;
  });
}

// What SHOW tcp_user_timeout says in the session: the server's socket option, read here from the
// server process's own socket.
TEST(tcp_settings, the_server_socket_has_the_keepalive_time_as_user_timeout) {
  const bool checked =
      for_each_tcp_case([](const tcp_case& c, postgres_lock& lock, const std::string& superuser) {
        const int port = local_port(static_cast<int>(lock.native_handle()));
        const std::string pid = pg::connection(superuser).query(
            "SELECT pid FROM pg_stat_activity WHERE client_port = " + std::to_string(port));
        if (pid.empty()) {
          ADD_FAILURE() << "no server process serves client port " << port;
          return true;
        }
        const auto fd = server_socket(std::stoi(pid), port);
        if (!fd) return false;
        EXPECT_EQ(socket_option(*fd, IPPROTO_TCP, TCP_USER_TIMEOUT), c.user_timeout_ms);
        EXPECT_EQ(socket_option(*fd, IPPROTO_TCP, TCP_KEEPIDLE), c.keepalive_idle);
        ::close(*fd);
        return true;
      });
  if (!checked) {
    GTEST_SKIP() << "cannot take the server process's socket (pidfd_getfd needs ptrace rights "
                    "over it: run as root)";
  }
}

// ---------------------------------------------------------------------------------------------
// A server that stops.

TEST(lost_server, session_alive_tells_on_its_first_call_after_the_server_stopped) {
  pg::private_server server;
  postgres_lock lock(server.conninfo(), pg::unique_name());
  lock.lock();
  const std::intptr_t socket = lock.native_handle();
  server.stop();
  ASSERT_TRUE(pg::wait_for_hangup(socket)) << "the server never closed the session";
  EXPECT_FALSE(lock.session_alive()) << "session_alive() says true after the server closed it";
  EXPECT_FALSE(lock.acquired());
  try {
    lock.unlock();
    ADD_FAILURE() << "unlock() after the server stopped did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
  }
}

}  // namespace
}  // namespace fasteners_test
