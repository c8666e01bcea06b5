#!/usr/bin/env bash
# Builds the benchmark (Release), runs it, and plots its results into docs/benchmark.{txt,json,csv,png}.
# Usage: bench/run.sh [fasteners_bench options, e.g. --quick]. Needs libbenchmark-dev and
# python3-matplotlib; uses libboost-dev and python3-fasteners when installed.
# FASTENERS_BENCH_BUILD_DIR picks the build directory (default build-bench); FASTENERS_BENCH_OUT
# the output directory (default docs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FASTENERS_BENCH_BUILD_DIR:-$root/build-bench}"
out="${FASTENERS_BENCH_OUT:-$root/docs}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFASTENERS_BUILD_BENCHMARKS=ON \
  -DFASTENERS_BUILD_TESTS=OFF -DFASTENERS_BUILD_EXAMPLES=OFF -DFASTENERS_BUILD_TOOLS=OFF \
  -DFASTENERS_INSTALL=OFF >/dev/null
cmake --build "$build" --target fasteners_bench -j "$(nproc)"

read -r load _ </proc/loadavg
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "run.sh: the load average is $load; figures from a busy machine are noisy" >&2
fi

mkdir -p "$out"
"$build/bench/fasteners_bench" --json "$out/benchmark.json" --csv "$out/benchmark.csv" "$@" |
  tee "$out/benchmark.txt"
/usr/bin/python3 "$root/bench/plot.py" "$out/benchmark.json" "$out/benchmark.png"
echo "run.sh: wrote $out/benchmark.txt, .json, .csv and .png"
