// fasteners as flock(1): invoked through a link named flock, it is `fasteners run --flock`.
#pragma once

#include <string>

namespace fasteners::tool {

// Whether a program invoked by `program_name` acts as util-linux flock(1): for "flock".
bool is_flock_name(const std::string& program_name);

// The help of flock(1)'s form of `fasteners run`, named `program_name`, in flock(1)'s layout.
std::string flock_help(const std::string& program_name);

// flock(1)'s version line, as it is written there: "flock from fasteners 1.2.3".
std::string flock_version(const std::string& program_name);

// An error of `fasteners run` as flock(1) names itself: a leading "fasteners run: " or
// "fasteners: " becomes "NAME: ", and a closing "(see 'fasteners run --help')" "(see 'NAME
// --help')". The rest, which may quote paths, stays as it is.
std::string as_flock_message(const std::string& message, const std::string& program_name);

}  // namespace fasteners::tool
