// fasteners as flock(1): invoked through a link named flock, it is `fasteners run --flock`.
#include "flock_command.hpp"

#include <cstring>
#include <initializer_list>

#include "fasteners/version.hpp"
#include "help_texts.hpp"

namespace fasteners::tool {
namespace {

// flock(1)'s help (util-linux 2.38), with its program name as %1, for the options both take.

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool is_flock_name(const std::string& program_name) { return program_name == "flock"; }

std::string flock_help(const std::string& program_name) {
  // flock(1)'s help starts with an empty line and ends with a line end.
  std::string text = std::string("\n") + help::flock + "\n";
  for (auto at = text.find("%1"); at != std::string::npos; at = text.find("%1", at)) {
    text.replace(at, 2, program_name);
    at += program_name.size();
  }
  return text;
}

std::string flock_version(const std::string& program_name) {
  return program_name + " from fasteners " + fasteners::version_string;
}

std::string as_flock_message(const std::string& message, const std::string& program_name) {
  std::string out = message;
  const std::string see_help = "(see 'fasteners run --help')";
  if (ends_with(out, see_help)) {
    out.replace(out.size() - see_help.size(), see_help.size(),
                "(see '" + program_name + " --help')");
  }
  for (const char* prefix : {"fasteners run: ", "fasteners: "}) {
    if (starts_with(out, prefix)) return out.replace(0, std::strlen(prefix), program_name + ": ");
  }
  return out;
}

}  // namespace fasteners::tool
