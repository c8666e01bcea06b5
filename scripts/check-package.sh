#!/usr/bin/env bash
# Proves the package works for consumers: install (static and shared) to a temporary prefix, build
# and run tests/consumer with find_package and with pkg-config, then build and run it with
# add_subdirectory; then build the Debian package (cpack -G DEB), install it, use it from /usr
# (find_package, pkg-config, /usr/bin/fasteners, man -w fasteners) and remove it again.
# Environment: FASTENERS_PACKAGE_DIR (work directory; default: a fresh temporary directory, removed
# on success and kept on failure), CXX (compiler, as CMake reads it), FASTENERS_CHECK_DEB=0 to skip
# the Debian package (it is skipped with a message where there is no dpkg, or neither root nor
# sudo, or a fasteners already in /usr that is not the package's).
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
sudo=()
deb_installed=0
# Whatever happens, the Debian package leaves /usr as it found it: the rest of CI runs after this.
remove_deb() {
  run "${sudo[@]}" dpkg --purge fasteners
}
on_exit() {
  local status=$?
  if [[ $deb_installed -eq 1 ]]; then
    remove_deb || echo "check-package.sh: could not remove the fasteners package" >&2
  fi
  if [[ $status -ne 0 ]]; then
    echo "check-package.sh: FAILED at: $step (exit status $status); files kept in $work" >&2
  elif [[ $keep -eq 0 ]]; then
    rm -rf "$work"
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run() {
  echo "+ $*"
  "$@"
}

# build_with_pkg_config OUTPUT SOURCE PACKAGE [LINKER FLAG...]: compiles SOURCE (of tests/consumer)
# with the flags of `pkg-config --cflags --libs PACKAGE`, as a Makefile would.
build_with_pkg_config() {
  local output=$1 source=$2 package=$3
  shift 3
  local output_flags flags
  output_flags="$(pkg-config --cflags --libs "$package")"
  read -r -a flags <<<"$output_flags"
  run "${CXX:-c++}" -std=c++17 -Wall -Wextra -Werror -DCONSUMER_MODE='"pkg-config"' \
    "$consumer/$source" -o "$output" "${flags[@]}" "$@"
}

# check_pkg_config KIND PREFIX DIR [LINKER FLAG...]: builds and runs the consumers with pkg-config
# against the fasteners installed in PREFIX, whose .pc files are found in DIR.
check_pkg_config() {
  local kind=$1 prefix=$2 dir=$3
  shift 3
  export PKG_CONFIG_PATH="$dir"
  echo "+ PKG_CONFIG_PATH=$dir pkg-config --cflags --libs fasteners"
  pkg-config --cflags --libs fasteners
  local found
  found="$(pkg-config --variable=prefix fasteners)"
  [[ $found == "$prefix" ]] || { echo "fasteners.pc says prefix=$found, not $prefix" >&2; exit 1; }
  [[ "$(pkg-config --modversion fasteners)" == "$version" ]] ||
    { echo "fasteners.pc: version $(pkg-config --modversion fasteners), not $version" >&2; exit 1; }
  build_with_pkg_config "$work/pkg-config-$kind" main.cpp fasteners "$@"
  run "$work/pkg-config-$kind"
  if pkg-config --exists fasteners-postgres; then
    build_with_pkg_config "$work/pkg-config-postgres-$kind" postgres_main.cpp fasteners-postgres "$@"
    run "$work/pkg-config-postgres-$kind"
  elif [[ "$(uname -s)" == Linux ]]; then
    echo "check-package.sh: fasteners-postgres.pc was not installed" >&2
    exit 1
  fi
  unset PKG_CONFIG_PATH
}

command -v pkg-config >/dev/null 2>&1 ||
  { echo "check-package.sh: pkg-config not found (Debian: apt-get install pkgconf)" >&2; exit 1; }
version="$(sed -n 's/^project(fasteners VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")"

for kind in static shared; do
  # Both install the command-line tool. The shared build is also the one packaged for Debian
  # (below), so it is configured for /usr: lib/<multiarch> there, still installed to $prefix here.
  shared=OFF configured_prefix=/usr/local
  [[ $kind == shared ]] && shared=ON configured_prefix=/usr
  prefix="$work/prefix-$kind"

  step="build and install fasteners ($kind)"
  echo "== $step into $prefix"
  run cmake -S "$root" -B "$work/build-$kind" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=$shared -DFASTENERS_BUILD_TESTS=OFF -DFASTENERS_BUILD_EXAMPLES=OFF \
    -DFASTENERS_BUILD_TOOLS=ON -DFASTENERS_INSTALL=ON -DCMAKE_INSTALL_PREFIX="$configured_prefix"
  run cmake --build "$work/build-$kind" -j "$jobs"
  run cmake --install "$work/build-$kind" --prefix "$prefix"

  step="check the installed files ($kind)"
  for file in include/fasteners/fasteners.hpp include/fasteners/detail/file_lock.hpp \
    include/fasteners/asio.hpp; do
    [[ -f "$prefix/$file" ]] || { echo "missing from the install: $file" >&2; exit 1; }
  done
  config="$(find "$prefix" -name fastenersConfig.cmake -print -quit)"
  [[ -n "$config" ]] || { echo "missing from the install: fastenersConfig.cmake" >&2; exit 1; }
  for file in fastenersConfigVersion.cmake fastenersTargets.cmake; do
    [[ -f "$(dirname "$config")/$file" ]] || { echo "missing from the install: $file" >&2; exit 1; }
  done
  if [[ -x "$work/build-$kind/tools/fasteners" ]]; then
    [[ -x "$prefix/bin/fasteners" ]] ||
      { echo "missing from the install: bin/fasteners (the command-line tool)" >&2; exit 1; }
    [[ -f "$prefix/share/man/man1/fasteners.1" ]] ||
      { echo "missing from the install: share/man/man1/fasteners.1" >&2; exit 1; }
    grep -q "^\.TH FASTENERS 1 .* \"fasteners $version\"" "$prefix/share/man/man1/fasteners.1" ||
      { echo "docs/fasteners.1: its .TH line does not say \"fasteners $version\"" >&2; exit 1; }
  fi
  pc="$(find "$prefix" -name fasteners.pc -print -quit)"
  [[ -n "$pc" ]] || { echo "missing from the install: fasteners.pc" >&2; exit 1; }
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

  step="build and run the consumer with pkg-config ($kind)"
  echo "== $step"
  if [[ $kind == shared ]]; then
    check_pkg_config $kind "$prefix" "$(dirname "$pc")" -Wl,-rpath,"$(dirname "$(dirname "$pc")")"
  else
    check_pkg_config $kind "$prefix" "$(dirname "$pc")"
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

# The Debian package, from the shared build: installed, used from /usr, removed.
deb_skipped() {
  echo "check-package.sh: skipping the Debian package: $*" >&2
  deb_result="Debian package skipped ($*)"
}
deb_check() {
  step="build the Debian package (cpack -G DEB)"
  echo "== $step"
  run cpack --config "$work/build-shared/CPackConfig.cmake" -G DEB -B "$work/deb"
  local deb
  deb="$(find "$work/deb" -maxdepth 1 -name 'fasteners_*.deb' -print -quit)"
  [[ -n "$deb" ]] || { echo "cpack made no fasteners_*.deb in $work/deb" >&2; exit 1; }
  run dpkg-deb --info "$deb"
  local contents file
  contents="$(dpkg-deb --contents "$deb")"
  for file in /usr/bin/fasteners /usr/share/man/man1/fasteners.1 /fasteners.pc \
    /fasteners-postgres.pc /fastenersConfig.cmake /usr/include/fasteners/fasteners.hpp \
    /usr/include/fasteners/asio.hpp \
    /libfasteners.so; do
    grep -q -- "$file\( \|\$\)" <<<"$contents" ||
      { echo "missing from the Debian package: $file" >&2; exit 1; }
  done

  step="install the Debian package"
  echo "== $step"
  deb_installed=1
  if command -v apt-get >/dev/null 2>&1; then
    run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      -o DPkg::Lock::Timeout=600 "$deb"
  else
    run "${sudo[@]}" dpkg -i "$deb"
  fi

  step="use the Debian package from /usr"
  echo "== $step"
  run /usr/bin/fasteners --version
  run /usr/bin/fasteners run "$work/deb.lock" true
  local page
  if [[ ! -e /usr/share/man/man1/fasteners.1 ]]; then
    # Minimal images tell dpkg to leave manual pages out (path-exclude in /etc/dpkg/dpkg.cfg.d).
    echo "check-package.sh: dpkg did not install the man page (path-exclude?); not checking it" >&2
  else
    page="$(man -w fasteners)"
    echo "man -w fasteners: $page"
    [[ $page == /usr/share/man/man1/fasteners.1* ]] ||
      { echo "man -w fasteners found $page, not the package's page" >&2; exit 1; }
  fi
  local config
  config="$(dpkg -L fasteners | grep '/fastenersConfig\.cmake$')"
  run cmake -S "$consumer" -B "$work/consumer-deb" -DCMAKE_BUILD_TYPE=Release \
    -DCONSUMER_EXPECT_PREFIX="$(dirname "$config")" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  run cmake --build "$work/consumer-deb" -j "$jobs"
  run "$work/consumer-deb/consumer"
  run "$work/consumer-deb/consumer_postgres"
  local pc
  pc="$(dpkg -L fasteners | grep '/fasteners\.pc$')"
  check_pkg_config deb /usr "$(dirname "$pc")"

  step="remove the Debian package"
  echo "== $step"
  remove_deb
  deb_installed=0
  if [[ -e /usr/bin/fasteners ]] || dpkg-query -W -f '${Status}' fasteners 2>/dev/null |
    grep -q ' installed$'; then
    echo "the fasteners package is still installed after dpkg --purge" >&2
    exit 1
  fi
  deb_result="Debian package built, installed, used from /usr and removed"
}

if [[ "${FASTENERS_CHECK_DEB:-1}" == 0 ]]; then
  deb_skipped "FASTENERS_CHECK_DEB=0"
elif ! command -v dpkg >/dev/null 2>&1 || ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  deb_skipped "no dpkg or dpkg-shlibdeps (Debian: apt-get install dpkg-dev)"
elif ! command -v man >/dev/null 2>&1; then
  deb_skipped "no man command (Debian: apt-get install man-db)"
elif dpkg-query -W -f '${Status}' fasteners 2>/dev/null | grep -q ' installed$'; then
  deb_skipped "a fasteners package is installed already; this check would replace and remove it"
elif [[ -e /usr/bin/fasteners || -e /usr/include/fasteners ]]; then
  deb_skipped "/usr/bin/fasteners or /usr/include/fasteners exists, not from a package"
elif [[ "$(id -u)" -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
  deb_skipped "not root and no sudo to install it with"
elif [[ "$(id -u)" -ne 0 ]] && ! sudo -n true 2>/dev/null && [[ ! -t 0 ]]; then
  deb_skipped "not root, and sudo wants a password but there is no terminal to ask on"
else
  [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
  deb_check
fi

step="done"
echo "check-package.sh: OK (find_package and pkg-config, static and shared; add_subdirectory)"
echo "check-package.sh: $deb_result"
