#!/usr/bin/env bash
# Sets up, builds with warnings as errors and runs the whole test suite through CTest.
# Environment: FASTENERS_BUILD_DIR (default: build/ in the source tree), FASTENERS_BUILD_TYPE
# (default: Release), FASTENERS_SKIP_SETUP=1 to skip the apt-get step, FASTENERS_TEST_TIMEOUT
# (seconds per test, default 600), FASTENERS_TEST_JOBS (parallel tests, default 2).
# Arguments are passed to the CMake configure step (for example -DFASTENERS_SANITIZE=thread).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FASTENERS_BUILD_DIR:-$root/build}"

if [[ "${FASTENERS_SKIP_SETUP:-0}" != 1 ]]; then
  "$root/scripts/setup.sh"
fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${FASTENERS_BUILD_TYPE:-Release}" \
  -DFASTENERS_WERROR=ON -DFASTENERS_BUILD_TESTS=ON -DFASTENERS_BUILD_EXAMPLES=ON "$@"
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
cd "$build"
status=0
ctest --output-on-failure --timeout "${FASTENERS_TEST_TIMEOUT:-600}" \
  -j "${FASTENERS_TEST_JOBS:-2}" || status=$?
# CTest names the tests it skipped, not why: print GoogleTest's reasons from its log.
awk '/^[0-9]+\/[0-9]+ Test: / { name = $3 }
  /: Skipped$/ { skipped = 1; reason = ""; next }
  skipped && /^\[  SKIPPED \]/ { print "skipped: " name ": " reason; skipped = 0; next }
  skipped { reason = reason (reason == "" ? "" : " ") $0 }' \
  Testing/Temporary/LastTest.log 2>/dev/null || true
exit "$status"
