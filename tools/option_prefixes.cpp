// getopt_long's abbreviated long options (`--time` for `--timeout`), which CLI11 does not take.
#include "option_prefixes.hpp"

#include <algorithm>

#include "errors.hpp"

namespace fasteners::tool {
namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

std::string expand_long_option(const CLI::App& app, const std::string& arg,
                               const std::string& subcommand,
                               const std::vector<std::string>& whole_only) {
  if (arg.size() < 3 || !starts_with(arg, "--")) return arg;
  const auto equals = arg.find('=');
  const std::string prefix = arg.substr(2, equals == std::string::npos ? equals : equals - 2);
  const std::string value = equals == std::string::npos ? "" : arg.substr(equals);
  const CLI::Option* found = nullptr;
  std::string found_name;
  bool ambiguous = false;
  std::string candidates;
  for (const CLI::Option* option : app.get_options()) {
    for (const std::string& name : option->get_lnames()) {
      if (name == prefix) return arg;
      if (!starts_with(name, prefix) ||
          std::find(whole_only.begin(), whole_only.end(), name) != whole_only.end()) {
        continue;
      }
      candidates += (candidates.empty() ? "--" : ", --") + name;
      if (found == nullptr) {
        found = option;
        found_name = name;
      } else if (found != option) {
        ambiguous = true;
      }
    }
  }
  if (ambiguous) {
    throw usage_error(subcommand,
                      "option '--" + prefix + "' is ambiguous: it begins " + candidates);
  }
  return found != nullptr ? "--" + found_name + value : arg;
}

std::vector<std::string> expand_long_options(const CLI::App& app,
                                             const std::vector<std::string>& args,
                                             const std::string& subcommand) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") {
      out.insert(out.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
      break;
    }
    out.push_back(expand_long_option(app, args[i], subcommand));
    const std::string& arg = out.back();
    if (!starts_with(arg, "--") || arg.find('=') != std::string::npos) continue;
    const CLI::Option* option = app.get_option_no_throw(arg);
    if (option != nullptr && option->get_items_expected_min() > 0 && i + 1 < args.size()) {
      out.push_back(args[++i]);
    }
  }
  return out;
}

}  // namespace fasteners::tool
