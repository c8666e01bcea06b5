// Locks through an open descriptor on POSIX: flock(2), or a whole-file open-file-description lock.
#pragma once

#include <string>

#include "run_lock.hpp"

namespace fasteners::tool {

// A lock taken through a descriptor that it never closes: flock(2) (`use_flock`), or an
// open-file-description fcntl lock on the whole file. Timed waits interrupt the blocking call
// with SIGALRM. Not thread-safe.
class descriptor_lock final : public run_lock {
 public:
  // `name` names the file in error messages, in quotes or as "descriptor N"; `path` is where
  // holders() looks for them.
  descriptor_lock(int fd, bool shared, bool use_flock, std::string name,
                  std::filesystem::path path);
  descriptor_lock(const descriptor_lock&) = delete;
  descriptor_lock& operator=(const descriptor_lock&) = delete;

  std::string what() const override { return lock_name(shared_, name_); }
  bool try_acquire() override;
  bool acquire(std::optional<seconds> timeout) override;
  std::string holders() const override { return describe_file_holders(path_, shared_, use_flock_); }
  std::intptr_t native_handle() const override { return held_ ? fd_ : -1; }
  // The lock stays with the open file, which the command or the shell keeps: nothing to do.
  void release() override {}

 private:
  // One lock call, waiting or not; returns 0 or the errno value of its failure.
  int lock_call(bool wait) const;
  bool held(bool value);
  [[noreturn]] void fail(int error) const;

  const int fd_;
  const bool shared_;
  const bool use_flock_;
  const std::string name_;
  const std::filesystem::path path_;
  bool held_ = false;
};

}  // namespace fasteners::tool
