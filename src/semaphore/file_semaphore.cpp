// The semaphore-file backend: the table of open semaphore files, N in the file, and slot waits.
#include "semaphore/file_semaphore.hpp"

#include <fstream>
#include <map>
#include <new>
#include <utility>

#include "engine/fork.hpp"
#include "engine/thread_pool.hpp"
#include "error.hpp"
#include "file/lock_table.hpp"

namespace fasteners::detail::semaphore {
namespace {

constexpr std::string_view header_start = "fasteners semaphore: ";
constexpr std::string_view header_end = " slots\n";

platform::byte_span span_of(place p) {
  return {p == turnstile ? turnstile_offset : slot_offset(p), 1};
}

constexpr platform::byte_span line_byte{line_offset, 1};

// The open semaphore files by identity. An entry whose state is being destroyed stays until its
// handles are closed, and nobody opens the file anew meanwhile: where locks belong to the process
// (classic fcntl), that close would drop the new state's locks.
struct table_type {
  mutex mu{mutex::forever};
  std::map<platform::file_identity, std::weak_ptr<file_semaphore_state>> states
      FASTENERS_GUARDED_BY(mu);
  std::condition_variable closed;  // A retiring entry went.
};

table_type& table() {
  static auto* const t = new table_type;
  return *t;
}

// fork(): the child forgets the parent's states (its objects leak them, see semaphore_object) and
// the lock table's hooks close the parent's handles (os_file).
void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { table().mu.lock(); }
void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { table().mu.unlock(); }
void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& t = table();
  // Leaked, not destroyed: the weak references count against the parent's control blocks.
  static_cast<void>(new decltype(t.states)(std::move(t.states)));
  t.states.clear();
  new (&t.closed) std::condition_variable();
  t.mu.unlock();
}

void install_fork_handlers() {
  static const bool installed = [] {
    file::lock_table::install_fork_handlers();
    engine::count_forks();
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return true;
  }();
  static_cast<void>(installed);
}

// The state listed for `id`, if it is alive; waits while one is being destroyed.
std::shared_ptr<file_semaphore_state> lookup(table_type& t, const platform::file_identity& id)
    FASTENERS_REQUIRES(t.mu) {
  for (;;) {
    const auto it = t.states.find(id);
    if (it == t.states.end()) return nullptr;
    if (auto state = it->second.lock()) return state;
    t.mu.wait(t.closed);
  }
}

// Records N in a new semaphore file, or reads what it records, under the setup byte's lock.
// Returns N as recorded.
std::size_t set_up(platform::native_handle handle, const std::filesystem::path& path,
                   std::size_t slots) {
  const platform::byte_span setup{setup_offset, 1};
  platform::wait_lock(handle, lock_mode::exclusive, setup, path);
  struct unlock_at_end {
    platform::native_handle handle;
    platform::byte_span setup;
    ~unlock_at_end() { platform::unlock(handle, setup); }
  } unlock{handle, setup};
  char buffer[64];
  const std::size_t n = platform::read_start(handle, buffer, sizeof buffer, path);
  const std::string_view content(buffer, n);
  if (content.empty()) {
    const std::string header = header_of(slots);
    platform::write_start(handle, header.data(), header.size(), path);
    return slots;
  }
  if (const auto recorded = slots_recorded(content)) return *recorded;
  throw_error(std::errc::invalid_argument, "use", path,
              "it is not a semaphore file (it does not start with \"fasteners semaphore: N "
              "slots\")");
}

}  // namespace

std::string header_of(std::size_t slots) {
  return std::string(header_start) + std::to_string(slots) + std::string(header_end);
}

std::optional<std::size_t> slots_recorded(std::string_view content) {
  if (content.substr(0, header_start.size()) != header_start) return std::nullopt;
  content.remove_prefix(header_start.size());
  std::size_t n = 0;
  std::size_t digits = 0;
  while (digits < content.size() && content[digits] >= '0' && content[digits] <= '9') {
    n = n * 10 + static_cast<std::size_t>(content[digits] - '0');
    if (++digits > 7) return std::nullopt;
  }
  content.remove_prefix(digits);
  if (digits == 0 || n == 0 || n > max_slots) return std::nullopt;
  if (content.substr(0, header_end.size()) != header_end) return std::nullopt;
  return n;
}

// ---- file_semaphore_state ----

struct file_semaphore_state::wait_job {
  std::shared_ptr<file_semaphore_state> state;
  place p;
  platform::native_handle handle;
};

file_semaphore_state::file_semaphore_state(file::os_file file, const platform::file_identity& id,
                                           std::filesystem::path path, bool follow_symlinks,
                                           std::size_t slots)
    : semaphore_state(slots),
      id_(id),
      path_(std::move(path)),
      follow_symlinks_(follow_symlinks),
      file_(std::move(file)),
      own_(slots + 1) {}

file_semaphore_state::~file_semaphore_state() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  if (generation() != engine::fork_generation()) return;
  auto& t = table();
  mutex_lock lock(t.mu);
  own_.clear();
  spares_.clear();
  file_.reset();
  const auto it = t.states.find(id_);
  if (it != t.states.end() && it->second.expired()) t.states.erase(it);
  t.closed.notify_all();
}

void file_semaphore_state::keep_spare(file::os_file file) {
  mutex_lock lock(mu_);
  spares_.push_back(std::move(file));
}

bool file_semaphore_state::try_take(place p) {
  return platform::try_lock(file_.get(), lock_mode::exclusive, span_of(p), path_);
}

void file_semaphore_state::start_wait(place p) {
  file::os_file own;
  platform::native_handle handle = file_.get();
  if (platform::blocked_handle_is_busy()) {
    platform::open_file info;
    own = file::os_file::open(path_, follow_symlinks_, info);
    if (info.id != id_) {
      throw_error(std::errc::no_such_file_or_directory, "wait for a slot of", path_,
                  "the file was deleted or replaced while in use");
    }
    handle = own.get();
  }
  auto job = std::make_unique<wait_job>(wait_job{shared_from_this(), p, handle});
  // A wait for the turnstile shows on the line byte (others_in_line()). Shared locks there never
  // conflict with each other, so this try fails only while a look at the line holds it (Windows
  // looks by taking it); the mark is a hint.
  if (p == turnstile) platform::try_lock(handle, lock_mode::shared, line_byte, path_);
  if (const auto error = engine::run_on_pool_thread(&run_wait, job.get())) {
    if (p == turnstile) platform::unlock(handle, line_byte);
    throw_error(error, "wait for a slot of", path_, "no thread could be started for the wait");
  }
  job.release();
  // The wait reports under mu_, which this thread holds: its handle is in place by then.
  if (own) own_[index_of(p)] = std::move(own);
}

void file_semaphore_state::run_wait(void* arg) {
  std::unique_ptr<wait_job> job(static_cast<wait_job*>(arg));
  std::error_code error;
  try {
    platform::wait_lock(job->handle, lock_mode::exclusive, span_of(job->p), job->state->path_);
  } catch (const std::system_error& e) {
    error = e.code();
  }
  if (job->p == turnstile) platform::unlock(job->handle, line_byte);
  const auto state = std::move(job->state);
  {
    mutex_lock lock(state->mu_);
    if (error) state->own_[state->index_of(job->p)].reset();
    state->wait_ended(job->p, error);
  }
  // `state` goes last: it may be the last reference, which closes the file.
}

std::error_code file_semaphore_state::let_go(place p) noexcept {
  file::os_file& own = own_[index_of(p)];
  const auto error = platform::unlock(own ? own.get() : file_.get(), span_of(p));
  own.reset();
  return error;
}

bool file_semaphore_state::others_in_line() noexcept {
  // The line byte and the turnstile, in one look.
  return platform::locked_elsewhere(file_.get(), lock_mode::exclusive,
                                    {line_offset, turnstile_offset - line_offset + 1});
}

std::optional<std::size_t> file_semaphore_state::recorded(const std::filesystem::path& path) {
  auto& t = table();
  mutex_lock lock(t.mu);
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) throw_error(ec, "read the semaphore", path);
  if (!std::filesystem::exists(status)) return std::nullopt;
  if (std::filesystem::is_regular_file(status)) {
    if (const auto id = platform::identify(path, true)) {
      if (auto found = lookup(t, *id)) return found->slots();
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(std::errc::permission_denied, "read the semaphore", path);
  char buffer[64];
  in.read(buffer, sizeof buffer);
  return slots_recorded(std::string_view(buffer, static_cast<std::size_t>(in.gcount())));
}

std::shared_ptr<file_semaphore_state> file_semaphore_state::find_or_open(
    const std::filesystem::path& path, std::size_t slots, const lock_options& options) {
  if (path.empty()) throw_error(std::errc::invalid_argument, "use", path, "the path is empty");
  if (path.native().find(std::filesystem::path::value_type()) != path.native().npos) {
    throw_error(std::errc::invalid_argument, "use", path, "the path contains a NUL character");
  }
  install_fork_handlers();
  auto& t = table();
  mutex_lock lock(t.mu);
  if (const auto id = platform::identify(path, options.follow_symlinks)) {
    if (auto found = lookup(t, *id)) return found;
  }
  platform::open_file info;
  file::os_file file = file::os_file::open(path, options.follow_symlinks, info);
  if (auto found = lookup(t, info.id)) {
    found->keep_spare(std::move(file));
    return found;
  }
  if (!info.writable) {
    throw_error(std::errc::permission_denied, "use", path,
                "a semaphore file must be open for writing, to lock its slots");
  }
  const std::size_t recorded = set_up(file.get(), path, slots);
  auto state = std::make_shared<file_semaphore_state>(std::move(file), info.id, path,
                                                      options.follow_symlinks, recorded);
  t.states[info.id] = state;
  return state;
}

// ---- file_semaphore_object ----

file_semaphore_object::file_semaphore_object(std::filesystem::path path, std::size_t slots,
                                             const lock_options& options)
    : semaphore_object(slots), path_(std::move(path)), options_(options) {}

file_semaphore_object::~file_semaphore_object() { release_all(); }

void file_semaphore_object::fail(std::error_code ec, std::string_view action,
                                 std::string_view detail) const {
  throw_error(ec, std::string(action) + " the semaphore", path_, detail);
}

std::shared_ptr<semaphore_state> file_semaphore_object::find_state() {
  return file_semaphore_state::find_or_open(path_, slots(), options_);
}

}  // namespace fasteners::detail::semaphore
