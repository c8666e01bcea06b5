// getopt_long's abbreviated long options (`--time` for `--timeout`), which CLI11 does not take.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace fasteners::tool {

// `arg` with an abbreviated long option of `app` written out in full, as getopt_long (and so
// util-linux flock(1)) reads it: `--time=5` becomes `--timeout=5`. `arg` comes back unchanged when
// it is not a long option, is one of the names already, or begins none of them (CLI11 then
// reports it). Throws usage_error for `subcommand`, naming the candidates, when `arg` begins the
// names of several options; names of one option (`--nonb`: --nonblock, --nonblocking) are no
// ambiguity. The names in `whole_only` are taken only in full, never abbreviated.
std::string expand_long_option(const CLI::App& app, const std::string& arg,
                               const std::string& subcommand,
                               const std::vector<std::string>& whole_only = {});

// expand_long_option() on every argument before the first `--`, except the values of options.
std::vector<std::string> expand_long_options(const CLI::App& app,
                                             const std::vector<std::string>& args,
                                             const std::string& subcommand);

}  // namespace fasteners::tool
