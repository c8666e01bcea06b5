#!/usr/bin/env bash
# Installs the build and test dependencies with apt-get (Debian 12); uses sudo when not root.
set -euo pipefail

packages=(
  build-essential cmake g++ clang # compilers (clang also brings the sanitizer runtimes)
  libgtest-dev                    # GoogleTest
  libcli11-dev                    # CLI11, for the command-line tool in tools/
  libasio-dev                     # standalone Asio: the tests and example of fasteners/asio.hpp
  libbenchmark-dev libboost-dev   # the benchmark (bench/): Google Benchmark, Boost.Interprocess
  python3-matplotlib              # bench/plot.py draws docs/benchmark.png
  python3 python3-fasteners       # interoperability tests against python-fasteners
  util-linux                      # setarch, for ThreadSanitizer on kernels with high ASLR entropy
  clang-format                    # formatting check
  postgresql-15                   # the throwaway server of the PostgreSQL tests
  libpq-dev                       # libpq, for fasteners::postgres
  libssl-dev                      # libcrypto, for the SHA-256 of PostgreSQL lock names
  python3-psycopg2                # the benchmark's PostgreSQL peer
  pgbouncer                       # a pooler, which the PostgreSQL tests run in both modes
  iproute2                        # ip: network namespaces, for the PostgreSQL partition test
  pkgconf                         # pkg-config, for the package check's pkg-config consumers
  man-db                          # man, for the package check's `man -w fasteners`
)

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup.sh: apt-get not found; install these (or equivalents) yourself and rerun with" \
    "FASTENERS_SKIP_SETUP=1: ${packages[*]}" >&2
  exit 1
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup.sh: not root and sudo not found; run as root or install: ${packages[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
echo "setup.sh: installing ${packages[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "${packages[@]}"
