// The process-wide table of open lock files: how objects and threads of one process share a file.
//
// Each lock file that this process uses is opened once (one entry per (device, inode)), and the
// OS lock on it stands for everything this process holds there: shared while only readers hold
// it, exclusive while a writer does, released when the last holder leaves. Threads and lock
// objects of the process are excluded from each other here, in memory, so the OS lock never has
// to tell them apart, and closing or opening the file elsewhere in the process cannot drop a lock
// that an entry still needs (its handles stay open until no object uses the entry).
#pragma once

#include <filesystem>
#include <memory>

#include "fasteners/lock_options.hpp"
#include "platform.hpp"

namespace fasteners::detail {

struct inode_entry;

// The state of one public lock object; every field is guarded by the table's mutex.
class lock_object {
 public:
  lock_object(std::filesystem::path path, const lock_options& options)
      : path_(std::move(path)), options_(options) {}
  ~lock_object();  // Releases everything the object holds; never throws.
  lock_object(const lock_object&) = delete;
  lock_object& operator=(const lock_object&) = delete;

  // Waits for a lock of `mode` until `until` (platform::try_once or platform::no_deadline
  // included). Returns whether it was taken. Throws std::system_error as the public API says.
  bool acquire(lock_mode mode, platform::deadline until);
  // Releases one lock of `mode` held by this object, preferring one the calling thread took.
  void release(lock_mode mode);
  bool holds(lock_mode mode) const noexcept;
  platform::native_handle native_handle() const noexcept;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  friend struct lock_table;
  const std::filesystem::path path_;
  const lock_options options_;
  // The file this object holds locks on; also kept from the first acquire on with keep_open.
  std::shared_ptr<inode_entry> entry_;
  int holds_ = 0;  // Locks this object holds.
};

}  // namespace fasteners::detail
