// fasteners::timeout_type: the timeout of the python-fasteners-style acquire calls.
#pragma once

#include <chrono>
#include <optional>

namespace fasteners {

// How long acquire(blocking, timeout) may wait, in seconds: no value means no limit. Negative
// and NaN values are refused with std::invalid_argument.
using timeout_type = std::optional<std::chrono::duration<double>>;

}  // namespace fasteners
