// What the library's sessions and the fasteners command's connections share: how a session names
// its client, and how pg_locks shows a lock name's key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fasteners/detail/export.hpp"

namespace fasteners::detail::postgres {

// The application_name of this library's sessions: "fasteners <pid>@<host> <program>", cut to the
// 63 bytes the server keeps, so that pg_stat_activity (and `fasteners status --postgres`) names
// the client process, its host and its program.
FASTENERS_API std::string application_name();

// A client as application_name() names it. The program is empty when the server cut it off.
struct client_name {
  long long pid = 0;
  std::string host;
  std::string program;
};

// The client that `text` names, if it has application_name()'s form.
FASTENERS_API std::optional<client_name> parse_application_name(std::string_view text);

// The condition on pg_locks (columns qualified by `table`, such as "l.", or unqualified) that
// selects the advisory locks on the bigint key in parameter $`parameter`, in the session's
// database: as pg_locks shows a bigint key, classid is its high 32 bits, objid its low 32 bits,
// and objsubid 1.
FASTENERS_API std::string key_condition(int parameter, std::string_view table = {});

}  // namespace fasteners::detail::postgres
