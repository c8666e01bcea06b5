// The semaphore-file backend: where a semaphore file keeps N and its slots, and its state here.
//
// A semaphore file starts with one line that records N ("fasteners semaphore: 4 slots"), written
// by its first user under the setup byte's lock and checked by every later one. Its locks lie
// beyond the bytes that lock files use (the main region and the gate, see gate_protocol.hpp): the
// setup byte, the line byte (held shared by each process that waits for the turnstile), the
// turnstile, then one byte per slot. The OS frees them with the process.
//
// Each semaphore file that this process uses has one file_semaphore_state (one per (device,
// inode), in a table of its own). Every lock is taken through its one handle, except where a
// blocked handle is busy (Windows): there each wait blocks on the file opened again, and what it
// is granted stays held through that handle until let go of. Waits block on threads of the
// library's own (engine/thread_pool.hpp), each keeping the state alive until it reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fasteners/lock_options.hpp"
#include "file/os_file.hpp"
#include "platform.hpp"
#include "semaphore/semaphore_object.hpp"
#include "semaphore/semaphore_state.hpp"

namespace fasteners::detail::semaphore {

// The layout of a semaphore file: one byte each, a byte apart, so that the kernel never merges
// two of one holder's locks into one (holders() then reports each slot on its own). The line
// byte is held shared by every process that waits for the turnstile.
inline constexpr std::uint64_t setup_offset = platform::gate_offset + (std::uint64_t{1} << 32);
inline constexpr std::uint64_t line_offset = setup_offset + 2;
inline constexpr std::uint64_t turnstile_offset = setup_offset + 4;
inline constexpr std::uint64_t first_slot_offset = setup_offset + 6;
inline constexpr std::uint64_t slot_offset(std::size_t i) { return first_slot_offset + 2 * i; }
// The most slots a semaphore may have: the first waiter in line blocks a thread per slot.
inline constexpr std::size_t max_slots = 4096;
// The line a semaphore file starts with, and N as `content` records it (nothing if `content` does
// not start with such a line).
std::string header_of(std::size_t slots);
std::optional<std::size_t> slots_recorded(std::string_view content);

// One semaphore file's state in this process.
class file_semaphore_state final : public semaphore_state,
                                   public std::enable_shared_from_this<file_semaphore_state> {
 public:
  file_semaphore_state(file::os_file file, const platform::file_identity& id,
                       std::filesystem::path path, bool follow_symlinks, std::size_t slots);
  // Closes the file, under the table's mutex (see file_semaphore.cpp).
  ~file_semaphore_state() override;

  const platform::file_identity& id() const noexcept { return id_; }
  // Keeps another handle of the file open as long as this state lives: closing it would drop the
  // classic fcntl locks this process holds there.
  void keep_spare(file::os_file file) FASTENERS_EXCLUDES(mu_);

  // The state of the semaphore file at `path`, opening it (and recording or checking N) if this
  // process has none. Throws std::system_error naming the path.
  // N as the semaphore file at `path` records it (see fasteners::semaphore_slots()): from the
  // state of the file if this process has one, else read from the file while no state of it can
  // be made, so that opening and closing it here never drops a slot that this process holds
  // (classic fcntl locks). Throws std::system_error naming the path.
  static std::optional<std::size_t> recorded(const std::filesystem::path& path);

  static std::shared_ptr<file_semaphore_state> find_or_open(const std::filesystem::path& path,
                                                            std::size_t slots,
                                                            const lock_options& options);

 protected:
  bool try_take(place p) override FASTENERS_REQUIRES(mu_);
  void start_wait(place p) override FASTENERS_REQUIRES(mu_);
  std::error_code let_go(place p) noexcept override FASTENERS_REQUIRES(mu_);
  bool others_in_line() noexcept override FASTENERS_REQUIRES(mu_);

 private:
  struct wait_job;
  static void run_wait(void* job);
  std::size_t index_of(place p) const { return p == turnstile ? slots() : p; }

  const platform::file_identity id_;
  const std::filesystem::path path_;
  const bool follow_symlinks_;
  file::os_file file_;
  // By slot, then the turnstile: the handle through which this process holds or waits for it,
  // where that is not file_.
  std::vector<file::os_file> own_ FASTENERS_GUARDED_BY(mu_);
  std::vector<file::os_file> spares_ FASTENERS_GUARDED_BY(mu_);
};

// A semaphore object on the semaphore file at a path.
class file_semaphore_object final : public semaphore_object {
 public:
  file_semaphore_object(std::filesystem::path path, std::size_t slots, const lock_options& options);
  ~file_semaphore_object() override;

  const std::filesystem::path& path() const noexcept { return path_; }
  [[noreturn]] void fail(std::error_code ec, std::string_view action,
                         std::string_view detail) const override;

 protected:
  std::shared_ptr<semaphore_state> find_state() override;

 private:
  const std::filesystem::path path_;
  const lock_options options_;
};

}  // namespace fasteners::detail::semaphore
