// fasteners::interprocess_semaphore, and what holders() tells of semaphore files.
#include "fasteners/interprocess_semaphore.hpp"

#include <stdexcept>
#include <string>

#include "semaphore/file_semaphore.hpp"

namespace fasteners {
namespace {

std::unique_ptr<detail::semaphore::semaphore_object> make_object(std::filesystem::path path,
                                                                 std::size_t slots,
                                                                 const lock_options& options) {
  using detail::semaphore::max_slots;
  if (slots == 0 || slots > max_slots) {
    throw std::invalid_argument("fasteners: a semaphore has 1 to " + std::to_string(max_slots) +
                                " slots, not " + std::to_string(slots));
  }
  if (path.empty()) throw std::invalid_argument("fasteners: the semaphore's path is empty");
  if (options.remove_on_release) {
    throw std::invalid_argument(
        "fasteners: remove_on_release does not apply to a semaphore file, which records its "
        "number of slots and is never deleted");
  }
  return std::make_unique<detail::semaphore::file_semaphore_object>(std::move(path), slots,
                                                                    options);
}

}  // namespace

interprocess_semaphore::interprocess_semaphore(std::filesystem::path path, std::size_t slots,
                                               const lock_options& options)
    : semaphore_core(make_object(std::move(path), slots, options)) {}

const std::filesystem::path& interprocess_semaphore::path() const noexcept {
  static const std::filesystem::path moved_from;
  const auto* object = static_cast<const detail::semaphore::file_semaphore_object*>(this->object());
  return object != nullptr ? object->path() : moved_from;
}

std::optional<std::size_t> semaphore_slots(const std::filesystem::path& path) {
  return detail::semaphore::file_semaphore_state::recorded(path);
}

std::optional<std::size_t> semaphore_slot(const lock_holder& lock) noexcept {
  using detail::semaphore::first_slot_offset;
  using detail::semaphore::max_slots;
  using detail::semaphore::slot_offset;
  if (lock.first_byte < first_slot_offset || lock.first_byte >= slot_offset(max_slots) ||
      (lock.first_byte - first_slot_offset) % 2 != 0 || lock.last_byte != lock.first_byte) {
    return std::nullopt;
  }
  return static_cast<std::size_t>((lock.first_byte - first_slot_offset) / 2);
}

bool semaphore_waiter(const lock_holder& lock) noexcept {
  return lock.first_byte == detail::semaphore::turnstile_offset &&
         lock.last_byte == lock.first_byte;
}

bool semaphore_in_line(const lock_holder& lock) noexcept {
  return lock.first_byte == detail::semaphore::line_offset && lock.last_byte == lock.first_byte &&
         lock.kind == lock_kind::shared;
}

}  // namespace fasteners
