#!/usr/bin/env bash
# Builds the library, the examples, the fasteners command-line tool and the Windows test suite as
# Windows executables with MinGW-w64 and runs the tests (the tool's included) under Wine through
# CTest; exits non-zero if anything fails.
# Environment: FASTENERS_SKIP_SETUP=1 skips the apt-get step; FASTENERS_WINDOWS_BUILD_DIR
# (default: build-windows/ in the source tree); FASTENERS_BUILD_TYPE (default: Release);
# FASTENERS_TEST_JOBS (parallel tests, default 2); FASTENERS_TEST_TIMEOUT (seconds per test,
# default 300). Arguments are passed to the CMake configure step.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FASTENERS_WINDOWS_BUILD_DIR:-$root/build-windows}"

# wine64 alone runs 64-bit programs: no i386 architecture, no wine32. The recommended packages
# (fonts, graphics and sound libraries) are not needed for console programs. The tool's CLI11 is
# header-only: the cross build uses the host package's headers (FASTENERS_CLI11_INCLUDE_DIR).
packages=(cmake make g++-mingw-w64-x86-64-posix wine wine64 googletest libcli11-dev)

setup() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "windows-test.sh: apt-get not found; install ${packages[*]} and rerun with" \
      "FASTENERS_SKIP_SETUP=1" >&2
    return 1
  fi
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    sudo=(sudo)
  fi
  echo "windows-test.sh: installing ${packages[*]}"
  timeout 900 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  timeout 1800 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${packages[@]}"
}

if [[ "${FASTENERS_SKIP_SETUP:-0}" != 1 ]]; then
  setup
fi

# A Wine prefix of its own, made fresh and removed at the end, with its server kept running
# meanwhile so that every test process does not start one.
wine_home="$(mktemp -d)"
export WINEPREFIX="$wine_home/prefix"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="  # no Mono or Gecko installer prompts
cleanup() {
  timeout 60 wineserver -k >/dev/null 2>&1 || true
  rm -rf "$wine_home"
}
trap cleanup EXIT

began=$SECONDS
echo "windows-test.sh: $(wine --version) in $WINEPREFIX"
mkdir -p "$WINEPREFIX"
timeout 60 wineserver -p || true # persistent until `wineserver -k`; only a speed-up
timeout 300 wine wineboot --init >/dev/null 2>&1
echo "windows-test.sh: Wine prefix ready in $((SECONDS - began))s"

began=$SECONDS
timeout 600 cmake -S "$root" -B "$build" \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/mingw-w64-x86_64.cmake" \
  -DCMAKE_BUILD_TYPE="${FASTENERS_BUILD_TYPE:-Release}" -DFASTENERS_WERROR=ON \
  -DFASTENERS_BUILD_TESTS=ON -DFASTENERS_BUILD_EXAMPLES=ON "$@"
timeout 1800 cmake --build "$build" -j 2
echo "windows-test.sh: built in $((SECONDS - began))s"

began=$SECONDS
cd "$build"
timeout 1800 ctest --output-on-failure --timeout "${FASTENERS_TEST_TIMEOUT:-300}" \
  -j "${FASTENERS_TEST_JOBS:-2}"
echo "windows-test.sh: tests ran in $((SECONDS - began))s"
