#!/usr/bin/env bash
# Builds and runs the semaphore benchmark (Release) and writes docs/semaphore-benchmark.md: the
# library against raw fcntl locks (bench/semaphore_bench.cpp), and `fasteners run --slots` against
# GNU parallel's `sem` (Debian package parallel) and flock(1), from the shell.
# Usage: bench/semaphore-run.sh [--quick]. FASTENERS_BENCH_BUILD_DIR and FASTENERS_BENCH_OUT as
# for bench/run.sh.
set -euo pipefail

# shellcheck source=bench/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
build_target fasteners_semaphore_bench
cmake -S "$root" -B "$build" -DFASTENERS_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" --target fasteners_cli -j "$(nproc)"
warn_if_busy semaphore-run.sh
fasteners="$(find "$build/tools" -maxdepth 1 -name fasteners -type f | head -1)"
if ! command -v sem >/dev/null; then
  echo "semaphore-run.sh: GNU parallel's sem is missing (apt-get install parallel)" >&2
  exit 1
fi

quick=0
bench_args=()
if [[ ${1:-} == --quick ]]; then
  quick=1
  bench_args=(--quick)
fi
commands=$((quick ? 20 : 100))
handoffs=$((quick ? 5 : 20))

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HOME="$work"  # sem keeps its semaphores under ~/.parallel

# ms_per_command N COMMAND...: the mean wall time of running COMMAND N times, in milliseconds.
ms_per_command() {
  local n=$1 start end
  shift
  start=$(date +%s%N)
  for ((i = 0; i < n; i++)); do "$@" >/dev/null; done
  end=$(date +%s%N)
  echo "scale=2; ($end - $start) / $n / 1000000" | bc
}

# handoff_ms TOOL: the median, over $handoffs rounds, of the milliseconds from the end of one
# holder's command to the start of a waiter's command, through TOOL's one slot.
handoff_ms() {
  local tool=$1 samples=()
  for ((r = 0; r < handoffs; r++)); do
    rm -f "$work/t0" "$work/t1"
    run_slot "$tool" "sleep 0.3; date +%s%N > $work/t0" &
    sleep 0.1
    run_slot "$tool" "date +%s%N > $work/t1"
    wait
    samples+=($((($(cat "$work/t1") - $(cat "$work/t0")) / 1000)))
  done
  printf '%s\n' "${samples[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] / 1000 }'
}

# run_slot TOOL SHELL_COMMAND: runs SHELL_COMMAND under TOOL's one slot.
run_slot() {
  case $1 in
    fasteners) "$fasteners" run --slots 1 "$work/one.sem" -c "$2" ;;
    sem) sem --id fasteners-bench-one -j 1 --fg "$2" ;;
    flock) flock "$work/one.lock" -c "$2" ;;
  esac
}

raw=$(ms_per_command "$commands" /bin/true)
ours=$(ms_per_command "$commands" "$fasteners" run --slots 4 "$work/four.sem" /bin/true)
ours_lock=$(ms_per_command "$commands" "$fasteners" run "$work/four.lock" /bin/true)
flock_cmd=$(ms_per_command "$commands" flock "$work/four.lock" /bin/true)
sems=$(ms_per_command "$((commands / 4))" sem --id fasteners-bench-four -j 4 --fg /bin/true)
h_ours=$(handoff_ms fasteners)
h_flock=$(handoff_ms flock)
h_sem=$(handoff_ms sem)

mkdir -p "$out"
{
  echo "# Semaphore benchmark"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr); Release build."
  echo
  "$build/bench/fasteners_semaphore_bench" "${bench_args[@]}"
  echo
  echo "## From the shell: one command run under a slot"
  echo
  echo "| | ms per command | ratio to running \`/bin/true\` alone |"
  echo "|---|---:|---:|"
  echo "| \`/bin/true\` alone | $raw | 1.00x |"
  echo "| \`fasteners run --slots 4 FILE true\` | $ours | $(echo "scale=2; $ours / $raw" | bc)x |"
  echo "| \`fasteners run FILE true\` (a lock) | $ours_lock | $(echo "scale=2; $ours_lock / $raw" | bc)x |"
  echo "| \`flock FILE true\` (one slot only) | $flock_cmd | $(echo "scale=2; $flock_cmd / $raw" | bc)x |"
  echo "| \`sem --id NAME -j 4 --fg true\` (GNU parallel) | $sems | $(echo "scale=2; $sems / $raw" | bc)x |"
  echo
  echo "## From the shell: a freed slot reaches a waiting command"
  echo
  echo "Median over $handoffs rounds of the time from the end of the holder's command to the start"
  echo "of the waiter's (N = 1; both measured with date +%s%N)."
  echo
  echo "| | median ms |"
  echo "|---|---:|"
  echo "| \`fasteners run --slots 1\` | $h_ours |"
  echo "| \`flock\` | $h_flock |"
  echo "| \`sem -j 1\` (GNU parallel) | $h_sem |"
} | tee "$out/semaphore-benchmark.md"
echo "semaphore-run.sh: wrote $out/semaphore-benchmark.md"
