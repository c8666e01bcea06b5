// Writing JSON strings: quoting and escaping, with invalid UTF-8 replaced.
#pragma once

#include <string>
#include <string_view>

namespace fasteners::tool {

// Returns `text` as a JSON string literal, quotes included. Bytes that are not valid UTF-8
// (command lines and paths may hold any bytes) become U+FFFD.
std::string json_string(std::string_view text);

}  // namespace fasteners::tool
