// The library's lock as a lock_backend of `fasteners run`.
#include "lock_backend.hpp"

#include "fasteners/interprocess_reader_writer_lock.hpp"

namespace fasteners::tool {
namespace {

class library_lock final : public lock_backend {
 public:
  library_lock(const std::filesystem::path& path, bool shared) : lock_(path), shared_(shared) {}

  bool try_acquire() override {
    return shared_ ? lock_.acquire_read_lock(false) : lock_.acquire_write_lock(false);
  }
  bool acquire(std::optional<std::chrono::duration<double>> timeout) override {
    return shared_ ? lock_.acquire_read_lock(true, timeout)
                   : lock_.acquire_write_lock(true, timeout);
  }
  std::intptr_t native_handle() const override { return lock_.native_handle(); }

 private:
  interprocess_reader_writer_lock lock_;
  const bool shared_;
};

}  // namespace

std::unique_ptr<lock_backend> make_library_lock(const std::filesystem::path& path, bool shared) {
  return std::make_unique<library_lock>(path, shared);
}

}  // namespace fasteners::tool
