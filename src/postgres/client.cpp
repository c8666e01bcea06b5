// How a session names its client, and how pg_locks shows a lock name's key.
#include "postgres/client.hpp"

#include <errno.h>
#include <unistd.h>

#include <cctype>

namespace fasteners::detail::postgres {
namespace {

constexpr std::string_view prefix = "fasteners ";

// The process's name, for application_name.
std::string program_name() {
#if defined(__GLIBC__)
  return program_invocation_short_name;
#else
  return "?";
#endif
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0) return "?";
  return buffer;
}

}  // namespace

std::string application_name() {
  std::string name =
      std::string(prefix) + std::to_string(::getpid()) + "@" + host_name() + " " + program_name();
  if (name.size() > 63) name.resize(63);
  return name;
}

std::optional<client_name> parse_application_name(std::string_view text) {
  if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
  text.remove_prefix(prefix.size());
  client_name c;
  std::size_t digits = 0;
  while (digits < text.size() && digits < 10 &&
         std::isdigit(static_cast<unsigned char>(text[digits]))) {
    c.pid = c.pid * 10 + (text[digits] - '0');
    ++digits;
  }
  if (digits == 0 || c.pid == 0 || digits >= text.size() || text[digits] != '@') {
    return std::nullopt;
  }
  text.remove_prefix(digits + 1);
  const auto space = text.find(' ');
  c.host = std::string(text.substr(0, space));
  if (space != std::string_view::npos) c.program = std::string(text.substr(space + 1));
  return c;
}

std::string key_condition(int parameter, std::string_view table) {
  const std::string t(table);
  const std::string key = "$" + std::to_string(parameter);
  return t + "locktype = 'advisory' AND " + t + "objsubid = 1 AND " + t + "classid = ((" + key +
         " >> 32) & 4294967295)::oid AND " + t + "objid = (" + key + " & 4294967295)::oid AND " +
         t +
         "database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = "
         "pg_catalog.current_database())";
}

}  // namespace fasteners::detail::postgres
