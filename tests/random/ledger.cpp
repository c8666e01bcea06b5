// The shared-memory ledger of the randomized test: hold and wait records, the invariant checks.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "random_test.hpp"

namespace fasteners_random {

const char* to_string(mode m) {
  switch (m) {
    case mode::read:
      return "read";
    case mode::write:
      return "write";
    case mode::none:
      break;
  }
  return "none";
}

const char* to_string(counter c) {
  static const char* const names[c_count] = {"ops",
                                             "acquire_blocking",
                                             "acquire_try",
                                             "acquire_try_taken",
                                             "acquire_timed",
                                             "acquire_timed_taken",
                                             "release",
                                             "destroy",
                                             "guard_scope",
                                             "std_lock_scope",
                                             "scoped_lock_pair",
                                             "shared_object_scope",
                                             "hold",
                                             "deadlock_probe",
                                             "misuse_probe",
                                             "move",
                                             "fork",
                                             "fork_child_lock",
                                             "exit",
                                             "kill",
                                             "respawn",
                                             "checkpoint"};
  return c >= 0 && c < c_count ? names[c] : "?";
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void violation(shared_state& s, const char* format, ...) {
  char text[4096];
  int n = std::snprintf(text, sizeof text, "VIOLATION (pid %d): ", static_cast<int>(::getpid()));
  va_list args;
  va_start(args, format);
  const int body =
      std::vsnprintf(text + n, sizeof text - static_cast<std::size_t>(n) - 1, format, args);
  va_end(args);
  n = std::min(n + std::max(body, 0), static_cast<int>(sizeof text) - 2);
  text[n++] = '\n';
  text[n] = '\0';
  if (s.violations.fetch_add(1) >= k_printed_violations) return;
  if (!s.message_taken.exchange(true)) {
    const auto length = std::min(static_cast<std::size_t>(n), sizeof s.first_message - 1);
    std::memcpy(s.first_message, text, length);
    s.first_message[length] = '\0';
  }
  const ssize_t written = ::write(2, text, static_cast<std::size_t>(n));
  static_cast<void>(written);
}

namespace {

std::uint64_t pack_hold(int file, mode m) {
  return static_cast<std::uint64_t>(::getpid()) << 16 | static_cast<std::uint64_t>(file) << 8 |
         static_cast<std::uint64_t>(m);
}

std::string describe_word(std::uint64_t word, int processes) {
  std::string out;
  for (int slot = 0; slot < processes; ++slot) {
    const auto field = (word >> (8 * slot)) & 0xff;
    char part[64];
    std::snprintf(part, sizeof part, "%sslot %d: %u readers %u writers", slot ? ", " : "", slot,
                  static_cast<unsigned>(field & 63), static_cast<unsigned>(field >> 6));
    out += part;
  }
  return out;
}

void update_max(std::atomic<std::int64_t>& max, std::int64_t value) {
  auto seen = max.load();
  while (value > seen && !max.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace

ledger::epochs ledger::read_epochs() const {
  epochs e{};
  for (int slot = 0; slot < processes_; ++slot) e.value[slot] = s_.slots[slot].epoch.load();
  return e;
}

std::uint64_t ledger::live_mask(const epochs& before, const epochs& after) const {
  std::uint64_t mask = 0;
  for (int slot = 0; slot < processes_; ++slot) {
    if (before.value[slot] % 2 == 0 && before.value[slot] == after.value[slot]) {
      mask |= std::uint64_t{0xff} << (8 * slot);
    }
  }
  return mask;
}

bool ledger::mark_dying(int slot) {
  auto& epoch = s_.slots[slot].epoch;
  auto seen = epoch.load();
  while (seen % 2 == 0) {
    if (epoch.compare_exchange_weak(seen, seen + 1)) return true;
  }
  return false;
}

void ledger::note_acquired(int slot, int thread, int record, int file, mode m, const char* how) {
  const auto before = read_epochs();
  const auto previous = s_.holders[file].fetch_add(unit(slot, m));
  const auto after = read_epochs();
  s_.activity_ns[file].store(now_ns());
  s_.slots[slot].threads[thread].holds[record].store(pack_hold(file, m));
  const auto live = previous & live_mask(before, after);
  const bool conflict = m == mode::write ? live != 0 : (live & k_writer_bits) != 0;
  if (conflict) {
    violation(s_,
              "%s lock on file %d taken by slot %d thread %d record %d (%s) while others held "
              "it: %s; now %s",
              to_string(m), file, slot, thread, record, how,
              describe_word(previous, processes_).c_str(), describe_file(file).c_str());
  }
}

void ledger::note_releasing(int slot, int thread, int record, int file, mode m) {
  s_.slots[slot].threads[thread].holds[record].store(0);
  s_.holders[file].fetch_sub(unit(slot, m));
  s_.activity_ns[file].store(now_ns());
}

void ledger::check_held(int slot, int thread, int file, mode m, const char* when) {
  const auto before = read_epochs();
  const auto word = s_.holders[file].load();
  const auto after = read_epochs();
  const auto mask = live_mask(before, after);
  const auto live = word & mask;
  const auto own = unit(slot, m) & mask;
  // A writer is alone; a reader sees no writer. Either way its own share must be there.
  const bool bad = m == mode::write
                       ? live != own
                       : (live & k_writer_bits) != 0 || (own != 0 && (live & (own * 63)) == 0);
  if (bad) {
    violation(s_, "slot %d thread %d holds a %s lock on file %d (%s) but the ledger says: %s", slot,
              thread, to_string(m), file, when, describe_file(file).c_str());
  }
}

void ledger::begin_wait(int slot, int thread, std::uint32_t files, mode m, std::int64_t deadline_ns,
                        counter op) {
  auto& w = s_.slots[slot].threads[thread].wait;
  w.pid.store(static_cast<std::int32_t>(::getpid()));
  w.files.store(files);
  w.mode.store(static_cast<std::uint8_t>(m));
  w.start_ns.store(now_ns());
  w.deadline_ns.store(deadline_ns);
  w.op.store(static_cast<std::uint8_t>(op));
  w.seq.fetch_add(1);  // Now odd: waiting.
}

void ledger::end_wait(int slot, int thread) {
  auto& w = s_.slots[slot].threads[thread].wait;
  if (w.deadline_ns.load() == 0) {
    update_max(s_.max_blocking_wait_ns, now_ns() - w.start_ns.load());
  }
  w.seq.fetch_add(1);  // Now even: done.
}

std::string ledger::describe_file(int file) const {
  std::string out = describe_word(s_.holders[file].load(), processes_);
  out += "; hold records:";
  bool any = false;
  for (int slot = 0; slot < processes_; ++slot) {
    for (int thread = 0; thread < k_max_threads; ++thread) {
      for (int record = 0; record < k_records; ++record) {
        const auto h = s_.slots[slot].threads[thread].holds[record].load();
        if (h == 0 || static_cast<int>((h >> 8) & 0xff) != file) continue;
        char part[128];
        std::snprintf(part, sizeof part, " [slot %d%s thread %d record %d pid %d %s]", slot,
                      s_.slots[slot].epoch.load() % 2 ? " (dying)" : "", thread, record,
                      static_cast<int>(h >> 16), to_string(static_cast<mode>(h & 0xff)));
        out += part;
        any = true;
      }
    }
  }
  if (!any) out += " none";
  return out;
}

std::string ledger::describe_all() const {
  std::string out;
  const auto now = now_ns();
  for (int file = 0; file < files_; ++file) {
    char head[64];
    std::snprintf(head, sizeof head, "\n  file %d: ", file);
    out += head;
    out += describe_file(file);
  }
  for (int slot = 0; slot < processes_; ++slot) {
    for (int thread = 0; thread < k_max_threads; ++thread) {
      const auto& w = s_.slots[slot].threads[thread].wait;
      if (w.seq.load() % 2 == 0) continue;
      char line[256];
      const auto deadline = w.deadline_ns.load();
      std::snprintf(
          line, sizeof line,
          "\n  waiting: slot %d thread %d pid %d files 0x%x %s (%s) for %.3f s%s", slot, thread,
          static_cast<int>(w.pid.load()), static_cast<unsigned>(w.files.load()),
          to_string(static_cast<mode>(w.mode.load())), to_string(static_cast<counter>(w.op.load())),
          static_cast<double>(now - w.start_ns.load()) / 1e9, deadline == 0 ? ", no deadline" : "");
      out += line;
    }
  }
  return out;
}

int count_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

fd_census take_fd_census(const std::filesystem::path& lock_dir) {
  fd_census census;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return census;
  const std::string prefix = lock_dir.string() + "/";
  std::map<std::pair<std::uint64_t, std::uint64_t>, int> per_file;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[512] = {};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const auto n = ::readlink(link.c_str(), target, sizeof target - 1);
    // A descriptor closed meanwhile (a queued wait's thread closes its own) is not counted.
    if (n <= 0) continue;
    if (std::string(target).rfind(prefix, 0) != 0) {
      ++census.others;
      continue;
    }
    struct stat st {};
    if (::stat(link.c_str(), &st) != 0) continue;
    const auto file = std::make_pair(std::uint64_t{st.st_dev}, std::uint64_t{st.st_ino});
    census.most_per_lock_file = std::max(census.most_per_lock_file, ++per_file[file]);
  }
  ::closedir(d);
  return census;
}

std::string list_fds() {
  std::string out;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[512] = {};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const auto n = ::readlink(link.c_str(), target, sizeof target - 1);
    out += " ";
    out += e->d_name;
    out += "->";
    out += n > 0 ? target : "?";
  }
  ::closedir(d);
  return out;
}

}  // namespace fasteners_random
