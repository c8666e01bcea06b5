// fasteners::holders() on POSIX: /proc/locks and /proc/PID/fdinfo on Linux, absent elsewhere.
#include "fasteners/holders.hpp"

#include <algorithm>
#include <cerrno>
#include <string>
#include <tuple>
#include <utility>

#include "error.hpp"
#include "platform.hpp"

#if defined(__linux__)
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <charconv>
#include <map>
#include <set>
#endif

namespace fasteners {
namespace {

using detail::throw_error;

constexpr std::string_view action = "list the lock holders of";

#if defined(__linux__)

// The gate byte of this library's lock protocol: a writer that waits holds it alone, and every
// lock of the library covers the bytes below it.
constexpr std::uint64_t gate_byte = detail::platform::gate_offset;

// One lock, as a line of /proc/locks or a "lock:" line of /proc/PID/fdinfo/FD describes it.
struct kernel_lock {
  lock_mechanism mechanism = lock_mechanism::other;
  lock_kind kind = lock_kind::exclusive;
  long pid = -1;  // Classic fcntl: the owner. flock(2): the process that took it. OFD: -1.
  unsigned major = 0;
  unsigned minor = 0;
  std::uint64_t inode = 0;
  std::uint64_t first_byte = 0;
  std::optional<std::uint64_t> last_byte;
};

// What tells two locks apart when the kernel does not name an owner.
auto shape(const kernel_lock& l) {
  return std::make_tuple(l.mechanism, l.kind, l.first_byte, l.last_byte);
}

template <class T>
bool parse_number(std::string_view text, T& value, int base = 10) {
  const auto* end = text.data() + text.size();
  const auto result = std::from_chars(text.data(), end, value, base);
  return result.ec == std::errc() && result.ptr == end;
}

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const auto begin = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > begin) words.push_back(line.substr(begin, i - begin));
  }
  return words;
}

// Parses "1: POSIX  ADVISORY  WRITE 1234 fe:00:131 0 EOF" (the format of fs/locks.c). Returns
// nothing for waiters ("1: -> ..."), unlocked leases and anything it does not understand.
std::optional<kernel_lock> parse_lock(std::string_view line) {
  const auto words = split_words(line);
  if (words.size() < 8 || words[0].back() != ':' || words[1].substr(0, 2) == "->") return {};
  kernel_lock l;
  if (words[1] == "POSIX") {
    l.mechanism = lock_mechanism::fcntl_posix;
  } else if (words[1] == "OFDLCK") {
    l.mechanism = lock_mechanism::fcntl_ofd;
  } else if (words[1] == "FLOCK") {
    l.mechanism = lock_mechanism::flock;
  }
  // words[2] is ADVISORY or MANDATORY for locks, ACTIVE, BREAKING or BREAKER for leases.
  if (words[3] == "READ") {
    l.kind = lock_kind::shared;
  } else if (words[3] == "WRITE") {
    l.kind = lock_kind::exclusive;
  } else {
    return {};
  }
  if (!parse_number(words[4], l.pid)) return {};
  const auto device = words[5];
  const auto colon1 = device.find(':');
  const auto colon2 = device.find(':', colon1 == device.npos ? colon1 : colon1 + 1);
  if (colon2 == device.npos || !parse_number(device.substr(0, colon1), l.major, 16) ||
      !parse_number(device.substr(colon1 + 1, colon2 - colon1 - 1), l.minor, 16) ||
      !parse_number(device.substr(colon2 + 1), l.inode)) {
    return {};
  }
  if (!parse_number(words[6], l.first_byte)) return {};
  if (words[7] != "EOF") {
    std::uint64_t last = 0;
    if (!parse_number(words[7], last)) return {};
    l.last_byte = last;
  }
  return l;
}

// Reads a whole (/proc) file. Returns 0 or the errno value of the failure.
int read_file(const std::string& path, std::string& out) {
  out.clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return errno;
  char buffer[8192];
  for (;;) {
    const auto n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      const int error = errno;
      ::close(fd);
      return error;
    }
  }
  ::close(fd);
  return 0;
}

template <class F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    f(text.substr(0, end));
    if (end == text.npos) break;
    text.remove_prefix(end + 1);
  }
}

std::string command_of(int pid) {
  const auto base = "/proc/" + std::to_string(pid);
  std::string text;
  if (read_file(base + "/cmdline", text) == 0) {
    while (!text.empty() && text.back() == '\0') text.pop_back();
    std::replace(text.begin(), text.end(), '\0', ' ');
    if (!text.empty()) return text;
  }
  if (read_file(base + "/comm", text) == 0 && !text.empty()) {
    if (text.back() == '\n') text.pop_back();
    return "[" + text + "]";
  }
  return {};
}

// Whether two descriptors refer to one open file description. When the kernel cannot say
// (kcmp(2) missing), different descriptors count as different open files.
bool same_open_file(int pid1, int fd1, int pid2, int fd2) {
  if (pid1 == pid2 && fd1 == fd2) return true;
#if defined(SYS_kcmp)
  constexpr int kcmp_file = 0;  // KCMP_FILE in <linux/kcmp.h>.
  return ::syscall(SYS_kcmp, static_cast<long>(pid1), static_cast<long>(pid2),
                   static_cast<long>(kcmp_file), static_cast<unsigned long>(fd1),
                   static_cast<unsigned long>(fd2)) == 0;
#else
  return false;
#endif
}

// A lock seen in a descriptor's fdinfo: `pid` holds it through its descriptor `fd`.
struct seen_lock {
  int pid;
  int fd;
  kernel_lock lock;
};

struct process_scan {
  std::vector<seen_lock> seen;
  std::vector<int> uninspectable;  // Processes whose descriptors this process may not list.
};

bool is_number(const char* name) {
  if (*name == '\0') return false;
  for (; *name != '\0'; ++name) {
    if (*name < '0' || *name > '9') return false;
  }
  return true;
}

// Adds the locks that the fdinfo of process `pid`'s descriptors (`fds`, its /proc/PID/fd) list
// for the file (dev, ino).
void scan_descriptors(DIR* fds, int pid, const std::string& base, dev_t dev, ino_t ino,
                      process_scan& scan) {
  std::string text;
  while (const dirent* entry = ::readdir(fds)) {
    int fd = 0;
    if (!is_number(entry->d_name) || !parse_number(entry->d_name, fd)) continue;
    struct stat st {};
    if (::fstatat(::dirfd(fds), entry->d_name, &st, 0) != 0) continue;
    if (st.st_dev != dev || st.st_ino != ino) continue;
    if (read_file(base + "/fdinfo/" + entry->d_name, text) != 0) continue;
    for_each_line(text, [&](std::string_view line) {
      constexpr std::string_view prefix = "lock:";
      if (line.substr(0, prefix.size()) != prefix) return;
      if (const auto lock = parse_lock(line.substr(prefix.size()))) {
        scan.seen.push_back({pid, fd, *lock});
      }
    });
  }
}

// Finds every descriptor of every process that refers to the file (dev, ino), and the locks
// its fdinfo lists.
process_scan scan_processes(dev_t dev, ino_t ino, const std::filesystem::path& path) {
  process_scan scan;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) {
    throw_error(std::error_code(errno, std::system_category()), action, path, "cannot list /proc");
  }
  std::string text;
  while (const dirent* process = ::readdir(proc)) {
    int pid = 0;
    if (!is_number(process->d_name) || !parse_number(process->d_name, pid)) continue;
    const std::string base = std::string("/proc/") + process->d_name;
    DIR* fds = ::opendir((base + "/fd").c_str());
    if (fds == nullptr) {
      // Kernel threads and zombies (an empty command line) have no open files.
      if ((errno == EACCES || errno == EPERM) && read_file(base + "/cmdline", text) == 0 &&
          !text.empty()) {
        scan.uninspectable.push_back(pid);
      }
      continue;  // Otherwise the process has ended.
    }
    scan_descriptors(fds, pid, base, dev, ino, scan);
    ::closedir(fds);
  }
  ::closedir(proc);
  return scan;
}

// What one reading of /proc/locks says about one inode: the locks on its device, and those on
// an inode of that number on another device (see linux_holders()).
struct proc_locks_reading {
  std::vector<kernel_lock> locks;
  std::vector<kernel_lock> other_device;
};

// The kernel writes /proc/locks a page at a time, each page from a fresh walk of the list of all
// the locks of the system. When locks come and go meanwhile, the list shifts under the walks,
// and the lines at the end of a page are repeated at the start of the next one (more locks
// ahead) or are skipped (fewer). Plain repeats are dropped here. The file is read three times,
// the pages starting at different lines each time (the first read() is short and a walk ends
// with it), so that a lock is at the edge of a page in one reading at most, and the counts taken
// are the medians of the readings.
constexpr std::size_t first_reads[] = {1 << 16, 1400, 2800};

// The lines of one reading of /proc/locks, without their ordinal ("12: "), repeats dropped.
// The lines of /proc/locks as read() brings them, a page at a time.
class proc_locks_pages {
 public:
  // Takes what one read() returned: ends the line the previous read() cut (which the walk before
  // wrote, so it ends that page) and keeps this page's lines, dropping those it repeats.
  void add(const char* data, std::size_t size) {
    bool ends_previous_page = !partial_.empty();
    std::vector<std::string> page;
    partial_.append(data, size);
    std::size_t end;
    while ((end = partial_.find('\n')) != std::string::npos) {
      const auto colon = partial_.find(": ");
      auto line = colon < end ? partial_.substr(colon + 2, end - colon - 2) : std::string();
      partial_.erase(0, end + 1);
      if (ends_previous_page) {
        lines_.push_back(std::move(line));
        ends_previous_page = false;
      } else {
        page.push_back(std::move(line));
      }
    }
    // The longest run that ends the previous page and starts this one was shown twice.
    std::size_t repeated = std::min(page.size(), lines_.size());
    while (repeated > 0 && !std::equal(page.begin(), page.begin() + static_cast<long>(repeated),
                                       lines_.end() - static_cast<long>(repeated))) {
      --repeated;
    }
    lines_.insert(lines_.end(), page.begin() + static_cast<long>(repeated), page.end());
  }
  std::vector<std::string> lines() && { return std::move(lines_); }

 private:
  std::vector<std::string> lines_;
  std::string partial_;  // The start of a line whose end the next read() brings.
};

std::vector<std::string> read_proc_locks_once(const std::filesystem::path& path,
                                              std::size_t first_read) {
  const int fd = ::open("/proc/locks", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw_error(std::error_code(errno, std::system_category()), action, path,
                "cannot read /proc/locks");
  }
  proc_locks_pages pages;
  std::vector<char> buffer(1 << 16);
  for (std::size_t size = first_read;; size = buffer.size()) {
    const auto n = ::read(fd, buffer.data(), size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      throw_error(std::error_code(error, std::system_category()), action, path,
                  "cannot read /proc/locks");
    }
    if (n == 0) break;
    pages.add(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return std::move(pages).lines();
}

std::vector<proc_locks_reading> read_proc_locks(const struct stat& st,
                                                const std::filesystem::path& path) {
  std::vector<proc_locks_reading> readings;
  for (const auto first_read : first_reads) {
    auto& reading = readings.emplace_back();
    for (const auto& line : read_proc_locks_once(path, first_read)) {
      const auto lock = parse_lock("0: " + line);
      if (!lock || lock->inode != static_cast<std::uint64_t>(st.st_ino)) continue;
      const bool same_device = lock->major == major(st.st_dev) && lock->minor == minor(st.st_dev);
      (same_device ? reading.locks : reading.other_device).push_back(*lock);
    }
  }
  return readings;
}

lock_holder holder_of(int pid, const kernel_lock& lock, bool inspectable) {
  lock_holder h;
  h.pid = pid;
  h.kind = lock.kind;
  h.mechanism = lock.mechanism;
  h.first_byte = lock.first_byte;
  h.last_byte = lock.last_byte;
  h.whole_file = lock.first_byte == 0 && (!lock.last_byte || *lock.last_byte >= gate_byte - 1);
  h.waiting = lock.first_byte == gate_byte && lock.last_byte == gate_byte;
  h.inspectable = inspectable;
  return h;
}

// Adds to the readings the locks on an inode of the same number on another device that a
// descriptor seen (scan.seen) shows to be this file: /proc/locks names files by the superblock's
// device, which stat() may report differently (btrfs subvolumes).
void add_other_devices(std::vector<proc_locks_reading>& readings, const process_scan& scan) {
  std::set<std::pair<unsigned, unsigned>> devices;
  for (const auto& s : scan.seen) devices.emplace(s.lock.major, s.lock.minor);
  for (auto& reading : readings) {
    for (const auto& lock : reading.other_device) {
      if (devices.count({lock.major, lock.minor}) != 0) reading.locks.push_back(lock);
    }
  }
}

using shape_type = decltype(shape(kernel_lock()));

// Classic fcntl locks name their owner in /proc/locks: each becomes a holder. The others are
// counted by shape, per reading, for unaccounted_locks().
std::map<shape_type, std::vector<int>> count_unowned(
    const std::vector<proc_locks_reading>& readings, std::vector<lock_holder>& result) {
  std::map<shape_type, std::vector<int>> counts;
  for (std::size_t i = 0; i < readings.size(); ++i) {
    for (const auto& lock : readings[i].locks) {
      if (lock.mechanism != lock_mechanism::fcntl_posix) {
        auto& per_reading = counts[shape(lock)];
        per_reading.resize(readings.size());
        ++per_reading[i];
      } else if (lock.pid > 0) {
        result.push_back(holder_of(static_cast<int>(lock.pid), lock, true));
      } else {
        result.push_back(holder_of(-1, lock, false));  // An owner in another PID namespace.
      }
    }
  }
  return counts;
}

// How many open files seen hold a lock of shape `key` (descriptors of one open file count once).
int open_files_holding(const process_scan& scan, const shape_type& key) {
  std::vector<const seen_lock*> open_files;
  for (const auto& s : scan.seen) {
    if (shape(s.lock) != key) continue;
    const bool known = std::any_of(open_files.begin(), open_files.end(), [&](const auto* o) {
      return same_open_file(o->pid, o->fd, s.pid, s.fd);
    });
    if (!known) open_files.push_back(&s);
  }
  return static_cast<int>(open_files.size());
}

// A lock that the open files seen do not account for (by the median of the readings' counts) is
// held by a process that could not be inspected, or by one that is not visible here at all.
void add_unaccounted(std::map<shape_type, std::vector<int>>& counts, const process_scan& scan,
                     std::vector<lock_holder>& result) {
  for (auto& [key, per_reading] : counts) {
    std::sort(per_reading.begin(), per_reading.end());
    if (open_files_holding(scan, key) >= per_reading[per_reading.size() / 2]) continue;
    kernel_lock lock;
    std::tie(lock.mechanism, lock.kind, lock.first_byte, lock.last_byte) = key;
    for (const int pid : scan.uninspectable) result.push_back(holder_of(pid, lock, false));
    if (scan.uninspectable.empty()) result.push_back(holder_of(-1, lock, false));
  }
}

// Sorts by pid, drops repeats and names each process's command.
void finish_holders(std::vector<lock_holder>& result) {
  const auto key = [](const lock_holder& h) {
    return std::make_tuple(h.pid, !h.inspectable, h.mechanism, h.kind, h.first_byte, h.last_byte);
  };
  std::sort(result.begin(), result.end(),
            [&](const lock_holder& a, const lock_holder& b) { return key(a) < key(b); });
  result.erase(
      std::unique(result.begin(), result.end(),
                  [&](const lock_holder& a, const lock_holder& b) { return key(a) == key(b); }),
      result.end());
  std::map<int, std::string> commands;
  for (auto& h : result) {
    if (h.pid <= 0) continue;
    auto it = commands.find(h.pid);
    if (it == commands.end()) it = commands.emplace(h.pid, command_of(h.pid)).first;
    h.command = it->second;
  }
}

std::vector<lock_holder> linux_holders(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return {};  // No file, no lock.
    throw_error(std::error_code(errno, std::system_category()), action, path);
  }
  auto readings = read_proc_locks(st, path);
  if (std::all_of(readings.begin(), readings.end(), [](const proc_locks_reading& r) {
        return r.locks.empty() && r.other_device.empty();
      })) {
    return {};
  }
  // Every descriptor of the file, in every process that may be inspected, lists the locks held
  // through it, consistently. Classic fcntl locks also name their owner in /proc/locks; the
  // others belong to an open file description, which any number of processes may share.
  const process_scan scan = scan_processes(st.st_dev, st.st_ino, path);
  std::vector<lock_holder> result;
  for (const auto& s : scan.seen) result.push_back(holder_of(s.pid, s.lock, true));
  add_other_devices(readings, scan);
  auto counts = count_unowned(readings, result);
  add_unaccounted(counts, scan, result);
  finish_holders(result);
  return result;
}

#endif

}  // namespace

std::vector<lock_holder> holders(const std::filesystem::path& path) {
#if defined(__linux__)
  return linux_holders(path);
#else
  throw_error(std::errc::function_not_supported, action, path,
              "fasteners::holders() is only available on Linux, where /proc tells");
#endif
}

std::vector<lock_holder> holders(const std::filesystem::path& path, std::error_code& ec) {
  ec.clear();
  try {
    return holders(path);
  } catch (const std::system_error& e) {
    ec = e.code();
    return {};
  }
}

}  // namespace fasteners
