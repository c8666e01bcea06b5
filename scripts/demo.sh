#!/usr/bin/env bash
# Sets up, builds (Release) and runs the demo: the fasteners command with two commands contending
# for one lock (and python-fasteners taking part), then processes counting with and without a lock.
# Environment: FASTENERS_BUILD_DIR (default: build/ in the source tree), FASTENERS_SKIP_SETUP=1 to
# skip the apt-get step. Arguments are passed to counter_demo (try --processes 8).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FASTENERS_BUILD_DIR:-$root/build}"

if [[ "${FASTENERS_SKIP_SETUP:-0}" != 1 ]]; then
  "$root/scripts/setup.sh"
fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFASTENERS_BUILD_EXAMPLES=ON \
  -DFASTENERS_BUILD_TESTS=OFF -DFASTENERS_BUILD_TOOLS=ON
cmake --build "$build" --target counter_demo fasteners_cli -j "$(nproc 2>/dev/null || echo 2)"

fasteners="$build/tools/fasteners"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lock="$work/demo.lock"
say() { printf '\n$ %s\n' "$*"; }

echo "== the fasteners command: two commands contend for $lock"
say "fasteners run $lock sh -c 'echo A holds the lock; sleep 2' &"
"$fasteners" run "$lock" sh -c 'echo "A holds the lock for 2 s"; sleep 2; echo "A is done"' &
holder=$!
sleep 0.5
say "fasteners status $lock"
"$fasteners" status "$lock" || true
say "fasteners run -n -E 75 $lock true   # one try, exit 75 when the lock is taken"
status=0
"$fasteners" run -n -E 75 "$lock" true || status=$?
echo "exit status $status"
say "fasteners run -v $lock echo B got the lock   # waits, and says for whom"
"$fasteners" run -v "$lock" echo "B got the lock"
wait "$holder"

if /usr/bin/python3 -c 'import fasteners' 2>/dev/null; then
  echo
  echo "== python-fasteners and the fasteners command share the lock"
  say "python3: fasteners.InterProcessLock('$lock') held for 1 s, while: fasteners run -v $lock ..."
  /usr/bin/python3 - "$lock" <<'PY' &
import sys, time, fasteners
lock = fasteners.InterProcessLock(sys.argv[1])
with lock:
    print("python holds the lock for 1 s", flush=True)
    time.sleep(1)
PY
  python=$!
  sleep 0.3
  "$fasteners" run -v "$lock" echo "the fasteners command got the lock after python released it"
  wait "$python"
fi

say "fasteners status $lock"
"$fasteners" status "$lock"

echo
echo "== processes counting in a shared file, without and with fasteners::interprocess_lock"
"$build/examples/counter_demo" "$@"
