// fasteners::lock_options: how a lock object treats its lock file.
#pragma once

namespace fasteners {

// Settings of a lock object, fixed at construction. The defaults behave as python-fasteners.
struct lock_options {
  // Deletes the lock file when this object releases the last lock on it anywhere, so lock files
  // do not pile up. The file is unlinked while still locked, and every acquire checks afterwards
  // that the file it locked is still the one at the path, retrying otherwise, so two holders
  // never meet. Every program that uses the file must use this library with this option:
  // python-fasteners, flock(1) and lock objects without it must not share such a lock file.
  bool remove_on_release = false;
  // When false, a lock path whose last component is a symbolic link is refused with
  // std::errc::too_many_symbolic_link_levels instead of being followed.
  bool follow_symlinks = true;
  // Keeps the lock file open from the first acquire until the object is destroyed, instead of
  // opening it at every acquire and closing it at every release: an uncontended lock and unlock
  // then cost two system calls. The object then keeps locking the file it first opened, so the
  // lock file must not be deleted or replaced while the object lives (remove_on_release still
  // checks the path after every acquire).
  bool keep_open = false;
  // Every exclusive acquisition takes a fencing token (fencing_token()), larger than every one
  // taken before on this lock file: a counter in the file "<lock path>.fence" beside it, created
  // when first needed and never deleted. Shared acquisitions read it. Costs a few system calls per
  // acquisition.
  bool fencing = false;
};

}  // namespace fasteners
