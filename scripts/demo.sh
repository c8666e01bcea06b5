#!/usr/bin/env bash
# Sets up, builds (Release) and runs the counter demo: lost updates without the lock, none with it.
# Environment: FASTENERS_BUILD_DIR (default: build/ in the source tree), FASTENERS_SKIP_SETUP=1 to
# skip the apt-get step. Arguments are passed to counter_demo (try --processes 8).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FASTENERS_BUILD_DIR:-$root/build}"

if [[ "${FASTENERS_SKIP_SETUP:-0}" != 1 ]]; then
  "$root/scripts/setup.sh"
fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFASTENERS_BUILD_EXAMPLES=ON \
  -DFASTENERS_BUILD_TESTS=OFF
cmake --build "$build" --target counter_demo -j "$(nproc 2>/dev/null || echo 2)"
"$build/examples/counter_demo" "$@"
