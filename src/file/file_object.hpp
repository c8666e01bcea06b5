// A lock object on a lock file: the lock-file backend's side of engine::lock_object.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>
#include <system_error>

#include "engine/lock_object.hpp"
#include "fasteners/lock_options.hpp"
#include "platform.hpp"

namespace fasteners::detail::file {

// One lock object on the file at a path. Bound to the file's inode_state (see lock_table) while it
// holds a lock there or acquires, and for its whole life with keep_open. Thread-safe.
class file_object final : public engine::lock_object {
 public:
  file_object(std::filesystem::path path, const lock_options& options)
      : engine::lock_object(options.fencing), path_(std::move(path)), options_(options) {}
  // Releases everything the object holds; never throws.
  ~file_object() override;

  const std::filesystem::path& path() const noexcept { return path_; }
  const lock_options& options() const noexcept { return options_; }
  // Whether the path still names the file `id` (remove_on_release checks after a grant).
  bool still_at_path(const platform::file_identity& id) const;

  [[noreturn]] void fail(std::error_code ec, std::string_view action,
                         std::string_view detail) const override;

 protected:
  std::shared_ptr<engine::lock_state> find_state() override;
  engine::holder& holder_in(engine::lock_state& state) override;
  bool stays_bound(const engine::lock_state& state) const override;

 private:
  const std::filesystem::path path_;
  const lock_options options_;
};

}  // namespace fasteners::detail::file
