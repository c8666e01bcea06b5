#!/usr/bin/env bash
# Builds the benchmark (Release), runs it, and plots its results into docs/benchmark.{txt,json,csv,png}.
# Usage: bench/run.sh [fasteners_bench options, e.g. --quick]. Needs libbenchmark-dev and
# python3-matplotlib; uses libboost-dev and python3-fasteners when installed.
# FASTENERS_BENCH_BUILD_DIR picks the build directory (default build-bench); FASTENERS_BENCH_OUT
# the output directory (default docs).
set -euo pipefail

# shellcheck source=bench/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
build_target fasteners_bench
warn_if_busy run.sh

mkdir -p "$out"
"$build/bench/fasteners_bench" --json "$out/benchmark.json" --csv "$out/benchmark.csv" "$@" |
  tee "$out/benchmark.txt"
/usr/bin/python3 "$root/bench/plot.py" "$out/benchmark.json" "$out/benchmark.png"
echo "run.sh: wrote $out/benchmark.txt, .json, .csv and .png"
