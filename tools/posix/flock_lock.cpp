// The --flock lock of `fasteners run` on POSIX: flock(2), the lock util-linux flock(1) takes.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "posix/descriptor_lock.hpp"
#include "run_lock.hpp"
#include "system.hpp"

namespace fasteners::tool {
namespace {

class flock_lock final : public run_lock {
 public:
  flock_lock(const std::filesystem::path& path, bool shared) : path_(path), shared_(shared) {}
  ~flock_lock() override {
    // Closing, not unlocking: a child that shares the open file keeps the lock.
    if (fd_ >= 0) ::close(fd_);
  }
  flock_lock(const flock_lock&) = delete;
  flock_lock& operator=(const flock_lock&) = delete;

  std::string what() const override { return lock_name(shared_, "'" + utf8_of(path_) + "'"); }
  bool try_acquire() override { return open_once().try_acquire(); }
  bool acquire(std::optional<seconds> timeout) override { return open_once().acquire(timeout); }
  std::string holders() const override { return describe_file_holders(path_, shared_, true); }
  std::intptr_t native_handle() const override { return lock_ ? lock_->native_handle() : -1; }
  void release() override {}  // Closing the file releases it (see the destructor).

 private:
  // Opens the file as flock(1) does: created if missing (not its directory), read-only when it
  // cannot be written (flock(2) does not care) or is a directory.
  descriptor_lock& open_once() {
    if (lock_) return *lock_;
    constexpr int common = O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | common, 0666);
    if (fd_ < 0 && (errno == EISDIR || errno == EACCES || errno == EROFS || errno == EPERM)) {
      const int write_error = errno;
      fd_ = ::open(path_.c_str(), O_RDONLY | common);
      if (fd_ < 0) errno = write_error;
    }
    if (fd_ < 0) {
      throw std::system_error(std::error_code(errno, std::system_category()),
                              "fasteners: cannot open lock file '" + utf8_of(path_) + "'");
    }
    lock_ =
        std::make_unique<descriptor_lock>(fd_, shared_, true, "'" + utf8_of(path_) + "'", path_);
    return *lock_;
  }

  const std::filesystem::path path_;
  const bool shared_;
  int fd_ = -1;
  std::unique_ptr<descriptor_lock> lock_;
};

}  // namespace

bool flock_supported() { return true; }

std::unique_ptr<run_lock> make_flock_lock(const std::filesystem::path& path, bool shared) {
  return std::make_unique<flock_lock>(path, shared);
}

}  // namespace fasteners::tool
