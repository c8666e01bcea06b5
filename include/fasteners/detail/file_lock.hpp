// detail::file_lock: the core of the lock-file types, a lock object on a path.
#pragma once

#include <filesystem>

#include "fasteners/detail/lock_core.hpp"
#include "fasteners/lock_options.hpp"

namespace fasteners::detail {

// One lock object on the lock file at a path (see interprocess_lock for the contract).
class FASTENERS_API file_lock : public lock_core {
 public:
  // Does not touch the file system.
  file_lock(std::filesystem::path path, const lock_options& options);
  // The path given at construction; empty once moved from.
  const std::filesystem::path& path() const noexcept;
};

}  // namespace fasteners::detail
