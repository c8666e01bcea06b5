// The command's long help texts, kept as plain text in tools/help/ and compiled in.
#pragma once

namespace fasteners::tool::help {

// tools/help/main.txt: the footer of `fasteners --help`.
extern const char* const main;
// tools/help/run.txt: the footer of `fasteners run --help`.
extern const char* const run;
// tools/help/status.txt: the footer of `fasteners status --help`.
extern const char* const status;
// tools/help/flock.txt: the help of the flock link, with its program name as %1.
extern const char* const flock;

}  // namespace fasteners::tool::help
