#!/usr/bin/env bash
# Proves the package works for consumers: install (static and shared) to a temporary prefix, build
# and run tests/consumer with find_package, then build and run it with add_subdirectory.
# Environment: FASTENERS_PACKAGE_DIR (work directory; default: a fresh temporary directory, removed
# on success and kept on failure), CXX (compiler, as CMake reads it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
consumer="$root/tests/consumer"
jobs="$(nproc 2>/dev/null || echo 2)"

if [[ -n "${FASTENERS_PACKAGE_DIR:-}" ]]; then
  work="$FASTENERS_PACKAGE_DIR"
  rm -rf "$work"
  mkdir -p "$work"
  keep=1
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/fasteners-package.XXXXXX")"
  keep=0
fi

step=""
on_exit() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    echo "check-package.sh: FAILED at: $step (exit status $status); files kept in $work" >&2
  elif [[ $keep -eq 0 ]]; then
    rm -rf "$work"
  fi
}
trap on_exit EXIT

run() {
  echo "+ $*"
  "$@"
}

for kind in static shared; do
  # The static build also installs the command-line tool; the shared one skips it to save time.
  shared=OFF tools=ON
  [[ $kind == shared ]] && shared=ON tools=OFF
  prefix="$work/prefix-$kind"

  step="build and install fasteners ($kind)"
  echo "== $step into $prefix"
  run cmake -S "$root" -B "$work/build-$kind" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=$shared -DFASTENERS_BUILD_TESTS=OFF -DFASTENERS_BUILD_EXAMPLES=OFF \
    -DFASTENERS_BUILD_TOOLS=$tools -DFASTENERS_INSTALL=ON
  run cmake --build "$work/build-$kind" -j "$jobs"
  run cmake --install "$work/build-$kind" --prefix "$prefix"

  step="check the installed files ($kind)"
  for file in include/fasteners/fasteners.hpp include/fasteners/detail/file_lock.hpp; do
    [[ -f "$prefix/$file" ]] || { echo "missing from the install: $file" >&2; exit 1; }
  done
  config="$(find "$prefix" -name fastenersConfig.cmake -print -quit)"
  [[ -n "$config" ]] || { echo "missing from the install: fastenersConfig.cmake" >&2; exit 1; }
  for file in fastenersConfigVersion.cmake fastenersTargets.cmake; do
    [[ -f "$(dirname "$config")/$file" ]] || { echo "missing from the install: $file" >&2; exit 1; }
  done
  if [[ -x "$work/build-$kind/tools/fasteners" && ! -x "$prefix/bin/fasteners" ]]; then
    echo "missing from the install: bin/fasteners (the command-line tool)" >&2
    exit 1
  fi
  if [[ $kind == shared ]]; then
    lib="$(find "$prefix" -name 'libfasteners.so*' -print -quit)"
    [[ -n "$lib" ]] || { echo "missing from the install: libfasteners.so" >&2; exit 1; }
  fi

  step="build the consumer with find_package ($kind)"
  echo "== $step"
  run cmake -S "$consumer" -B "$work/consumer-$kind" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_EXPECT_PREFIX="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  run cmake --build "$work/consumer-$kind" -j "$jobs"
  step="run the consumer built with find_package ($kind)"
  run "$work/consumer-$kind/consumer"
  if [[ -x "$work/consumer-$kind/consumer_postgres" ]]; then
    run "$work/consumer-$kind/consumer_postgres"
  elif [[ "$(uname -s)" == Linux ]]; then
    echo "check-package.sh: fasteners::postgres was not installed (libpq-dev, libssl-dev?)" >&2
    exit 1
  fi
done

step="build the consumer with add_subdirectory"
echo "== $step"
run cmake -S "$consumer" -B "$work/consumer-subdir" -DCMAKE_BUILD_TYPE=Release \
  -DFASTENERS_SOURCE_DIR="$root"
run cmake --build "$work/consumer-subdir" -j "$jobs"
step="run the consumer built with add_subdirectory"
run "$work/consumer-subdir/consumer"
if [[ -x "$work/consumer-subdir/consumer_postgres" ]]; then
  run "$work/consumer-subdir/consumer_postgres"
fi

step="done"
echo "check-package.sh: OK (find_package static and shared, add_subdirectory)"
