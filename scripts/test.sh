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
ctest --output-on-failure --timeout "${FASTENERS_TEST_TIMEOUT:-600}" \
  -j "${FASTENERS_TEST_JOBS:-2}"
