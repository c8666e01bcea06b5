#!/usr/bin/env bash
# Builds the PostgreSQL benchmark (Release), starts a throwaway server with
# scripts/postgres-server.sh, runs fasteners_postgres_bench against it, stops the server, and
# writes docs/postgres-benchmark.{md,json,csv,png}.
# Usage: bench/postgres-run.sh [fasteners_postgres_bench options, e.g. --quick or
# --fail-on-targets]. Needs postgresql-15, libpq-dev, libssl-dev, libbenchmark-dev,
# python3-matplotlib and python3-psycopg2 (scripts/setup.sh installs them).
# FASTENERS_BENCH_BUILD_DIR picks the build directory (default build-bench); FASTENERS_BENCH_OUT
# the output directory (default docs); FASTENERS_BENCH_CONNINFO a server to use instead of a
# throwaway one.
set -euo pipefail

# shellcheck source=bench/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
build_target fasteners_postgres_bench -DFASTENERS_POSTGRES=ON

conninfo="${FASTENERS_BENCH_CONNINFO:-}"
server_dir=""
# shellcheck disable=SC2317 # called by the EXIT trap
stop_server() {
  if [[ -n $server_dir ]]; then
    bash "$root/scripts/postgres-server.sh" stop "$server_dir" >/dev/null || true
    rm -rf "$server_dir"
  fi
}
trap stop_server EXIT
if [[ -z $conninfo ]]; then
  # Short, under /tmp: the socket path must fit in 107 bytes and the server's user must reach it.
  server_dir=$(mktemp -d /tmp/pgbench.XXXXXX)
  bash "$root/scripts/postgres-server.sh" start "$server_dir" >/dev/null
  conninfo=$(<"$server_dir/conninfo")
fi

warn_if_busy postgres-run.sh

mkdir -p "$out"
status=0
"$build/bench/fasteners_postgres_bench" --conninfo "$conninfo" \
  --json "$out/postgres-benchmark.json" --csv "$out/postgres-benchmark.csv" \
  --markdown "$out/postgres-benchmark.md" --png postgres-benchmark.png "$@" || status=$?
# 2: a target was missed (--fail-on-targets); the figures are written all the same.
if [[ $status -ne 0 && $status -ne 2 ]]; then
  exit "$status"
fi
/usr/bin/python3 "$root/bench/postgres_plot.py" "$out/postgres-benchmark.json" \
  "$out/postgres-benchmark.png"
echo "postgres-run.sh: wrote $out/postgres-benchmark.md, .json, .csv and .png" >&2
exit "$status"
