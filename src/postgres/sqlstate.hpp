// The SQLSTATE codes the PostgreSQL locks act on, named as in PostgreSQL's errcodes.h (which libpq
// does not install for clients).
#pragma once

#include <string_view>

namespace fasteners::detail::postgres::sqlstate {

// Class 08: connection exception.
inline constexpr std::string_view connection_exception_class = "08";
// Class 22: data exception. The setup's check of its server process divides by zero on another
// process than the one the connection reported (see session.cpp).
inline constexpr std::string_view division_by_zero = "22012";
// Class 23: integrity constraint violation. Two sessions created the same table at once.
inline constexpr std::string_view unique_violation = "23505";
// Class 26: invalid SQL statement name. A prepared statement is missing: another server process.
inline constexpr std::string_view invalid_sql_statement_name = "26000";
// Class 28: invalid authorization specification (no such role, a wrong password, pg_hba.conf).
inline constexpr std::string_view invalid_authorization_class = "28";
// Class 40: transaction rollback.
inline constexpr std::string_view deadlock_detected = "40P01";
// Class 42: syntax error or access rule violation.
inline constexpr std::string_view insufficient_privilege = "42501";
inline constexpr std::string_view undefined_object = "42704";  // Unknown setting, among others.
inline constexpr std::string_view duplicate_prepared_statement = "42P05";
inline constexpr std::string_view undefined_table = "42P01";
inline constexpr std::string_view duplicate_table = "42P07";
// Class 55: object not in prerequisite state. lock_timeout fired.
inline constexpr std::string_view lock_not_available = "55P03";
// Class 57: operator intervention. The session was ended (57P01 to 57P05), or a statement was
// canceled (statement_timeout among others).
inline constexpr std::string_view operator_intervention_class = "57P";
inline constexpr std::string_view query_canceled = "57014";

// Whether `state` is `code`, or in the class that `code` (a prefix) names.
inline bool in(std::string_view state, std::string_view code) {
  return state.substr(0, code.size()) == code;
}

}  // namespace fasteners::detail::postgres::sqlstate
