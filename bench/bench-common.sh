# Sourced by bench/run.sh and bench/postgres-run.sh: the directories, the Release build, the load.
# shellcheck shell=bash disable=SC2034 # root, build and out are for the scripts that source this

# The sources, the build (FASTENERS_BENCH_BUILD_DIR, default build-bench) and the output
# (FASTENERS_BENCH_OUT, default docs).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FASTENERS_BENCH_BUILD_DIR:-$root/build-bench}"
out="${FASTENERS_BENCH_OUT:-$root/docs}"

# build_target TARGET [CMAKE_OPTION...]: configures the Release build of the benchmarks, then
# builds TARGET.
build_target() {
  local target=$1
  shift
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFASTENERS_BUILD_BENCHMARKS=ON "$@" \
    -DFASTENERS_BUILD_TESTS=OFF -DFASTENERS_BUILD_EXAMPLES=OFF -DFASTENERS_BUILD_TOOLS=OFF \
    -DFASTENERS_INSTALL=OFF >/dev/null
  cmake --build "$build" --target "$target" -j "$(nproc)"
}

# warn_if_busy NAME: a warning on stderr, under NAME, when the load average is above 0.5.
warn_if_busy() {
  local load
  read -r load _ </proc/loadavg
  if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "$1: the load average is $load; figures from a busy machine are noisy" >&2
  fi
}
