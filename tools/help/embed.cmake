# Writes OUTPUT, a C++ source defining fasteners::tool::help::NAME for each tools/help/NAME.txt
# of NAMES (see tools/help_texts.hpp). Run by CMake at build time: cmake -DINPUT_DIR=...
# -DOUTPUT=... -DNAMES="main;run" -P embed.cmake.
set(content "// Generated from tools/help/*.txt by tools/help/embed.cmake; do not edit.\n")
string(APPEND content "#include \"help_texts.hpp\"\n\nnamespace fasteners::tool::help {\n\n")
foreach(name IN LISTS NAMES)
  file(READ "${INPUT_DIR}/${name}.txt" text)
  string(REGEX REPLACE "\n$" "" text "${text}")  # The file's last line end is not the text's.
  string(APPEND content "const char* const ${name} = R\"fasteners_help(${text})fasteners_help\";\n\n")
endforeach()
string(APPEND content "}  // namespace fasteners::tool::help\n")
file(WRITE "${OUTPUT}.new" "${content}")
configure_file("${OUTPUT}.new" "${OUTPUT}" COPYONLY)  # Rewritten only if it changed.
file(REMOVE "${OUTPUT}.new")
