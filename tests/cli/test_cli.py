#!/usr/bin/env python3
"""Tests of the `fasteners` command-line tool, driving the built binary as a user would.

Run through CTest (tests/cli/CMakeLists.txt), or by hand:
  /usr/bin/python3 tests/cli/test_cli.py --fasteners build/tools/fasteners [--group status] [-v]

Standard library only, plus python-fasteners (Debian: python3-fasteners) and util-linux flock(1)
for the interoperability groups. Processes that hold locks report "locked <pid>" on stdout once
they hold it and release it when their stdin closes, so no test depends on sleeping; time bounds
are loose and only ever say "quickly" (well under WAIT) or "not before the timeout".
"""

import argparse
import atexit
import hashlib
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

FASTENERS = None  # The binary under test, from --fasteners.
MECHANISM = "fcntl_ofd"  # What the library uses: fcntl_posix in a FASTENERS_CLASSIC_FCNTL build.
VERSION = None  # The project version the binary must print, from --version.
PYTHON = sys.executable  # Must import fasteners (CTest runs this script with /usr/bin/python3).
FLOCK = shutil.which("flock") or "/usr/bin/flock"
WAIT = 30.0  # The longest anything that should happen may take.
HOLD = "echo locked $$; exec cat >/dev/null"  # A command that holds until its stdin closes.
# The postgres group: the server's conninfo (from --conninfo, or the conninfo file of the
# directory of scripts/postgres-server.sh that --postgres-state names), and its psql.
POSTGRES_CONNINFO = None
POSTGRES_BUILT = None  # Whether the binary has --postgres, from --postgres-built; None: ask it.
PSQL = shutil.which("psql") or "psql"

# python-fasteners, in a process of its own: hold a lock until stdin closes, or try it once, or
# wait for it. Kinds: lock (InterProcessLock), read and write (InterProcessReaderWriterLock).
PY_LOCK = r"""
import os, sys, fasteners
action, kind, path = sys.argv[1:4]
lock = (fasteners.InterProcessLock(path) if kind == "lock"
        else fasteners.InterProcessReaderWriterLock(path))
take = {"lock": lambda **kw: lock.acquire(**kw),
        "read": lambda **kw: lock.acquire_read_lock(**kw),
        "write": lambda **kw: lock.acquire_write_lock(**kw)}[kind]
if action == "try":
    sys.exit(0 if take(blocking=False) else 1)
if action == "wait":
    print("waiting", os.getpid(), flush=True)
    sys.exit(0 if take(blocking=True, timeout=float(sys.argv[4])) else 1)
assert take(blocking=True, timeout=60)
print("locked", os.getpid(), flush=True)
sys.stdin.read()
"""

# Holds 200 classic fcntl locks on files of its own (so that /proc/locks spans pages) and keeps
# dropping and retaking them until its stdin closes.
CHURN = r"""
import fcntl, os, random, sys, threading
fds = []
for i in range(200):
    fds.append(os.open(os.path.join(sys.argv[1], "churn%d" % i), os.O_RDWR | os.O_CREAT))
    fcntl.lockf(fds[-1], fcntl.LOCK_EX)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("churning", flush=True)
while not done.is_set():
    fd = random.choice(fds)
    fcntl.lockf(fd, fcntl.LOCK_UN)
    fcntl.lockf(fd, fcntl.LOCK_EX)
"""

# Holds flock(2) locks on the files it is given until its stdin closes.
FLOCK_MANY = r"""
import fcntl, os, sys
fds = [os.open(path, os.O_RDWR | os.O_CREAT) for path in sys.argv[1:]]
for fd in fds:
    fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", os.getpid(), flush=True)
sys.stdin.read()
"""


def postgres_built():
    """Whether the binary under test has --postgres."""
    global POSTGRES_BUILT
    if POSTGRES_BUILT is None:
        result = run("status", "--postgres", "host=/nonexistent port=1 connect_timeout=1", "x")
        POSTGRES_BUILT = "without PostgreSQL support" not in result.stderr
    return POSTGRES_BUILT


def readable_by_anyone(path):
    """Whether every user may read the file `path`: it is readable by others, and every
    directory above it searchable."""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & stat.S_IROTH:
        return False
    directory = os.path.dirname(path)
    while True:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
        if directory == "/":
            return True
        directory = os.path.dirname(directory)


NOBODY_COPY = None  # (binary, environment) for user 65534, from fasteners_for_nobody().


def fasteners_for_nobody():
    """The binary under test where the unprivileged user 65534 can run it, whatever directory the
    build lives in (a clone in /root, mode 0700, is out of its reach): a copy in a directory of
    its own under /tmp, with copies of the shared libraries it loads from unreachable places (a
    shared build's libfasteners), found through LD_LIBRARY_PATH. Returns (binary, environment);
    the copy is deleted when the tests end."""
    global NOBODY_COPY
    if NOBODY_COPY is None:
        directory = tempfile.mkdtemp(prefix="fasteners_cli_bin_", dir="/tmp")
        atexit.register(shutil.rmtree, directory, True)
        os.chmod(directory, 0o755)
        binary = os.path.join(directory, "fasteners")
        shutil.copyfile(FASTENERS, binary)
        os.chmod(binary, 0o755)
        ldd = subprocess.run(["ldd", FASTENERS], capture_output=True, text=True, timeout=WAIT)
        env = dict(os.environ)
        copied = False
        for line in ldd.stdout.splitlines():
            words = line.split()
            if len(words) >= 3 and words[1] == "=>" and os.path.isabs(words[2]):
                if not readable_by_anyone(words[2]):
                    library = os.path.join(directory, words[0])
                    shutil.copyfile(words[2], library)
                    os.chmod(library, 0o755)
                    copied = True
        if copied:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                [directory] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        NOBODY_COPY = (binary, env)
    return NOBODY_COPY


def run(*args, env=None, cwd=None, as_nobody=False):
    """Runs `fasteners ARGS...` to completion; returns the CompletedProcess (text output).
    With `as_nobody`, as the unprivileged user 65534 (the caller must be root), through a copy of
    the binary that this user can reach."""
    binary = FASTENERS
    user = {}
    if as_nobody:
        user = {"user": 65534, "group": 65534, "extra_groups": []}
        binary, nobody_env = fasteners_for_nobody()
        env = env or nobody_env
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=WAIT * 2,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL, **user)


def run_timed(*args):
    start = time.monotonic()
    result = run(*args)
    return result, time.monotonic() - start


def python_try(kind, path):
    """Whether python-fasteners gets the lock of `kind` at once."""
    result = subprocess.run([PYTHON, "-c", PY_LOCK, "try", kind, path], capture_output=True,
                            text=True, timeout=WAIT)
    if result.returncode not in (0, 1):
        raise AssertionError("python-fasteners failed: " + result.stderr)
    return result.returncode == 0


def flock_try(path, *options):
    """Whether util-linux flock(1) gets the lock at once."""
    result = subprocess.run([FLOCK, "-n", *options, path, "true"], capture_output=True,
                            timeout=WAIT)
    if result.returncode not in (0, 1):
        raise AssertionError("flock(1) failed: %r" % result.stderr)
    return result.returncode == 0


class Process:
    """A running program whose stdout and stderr lines are collected as they come."""

    def __init__(self, argv, env=None, executable=None, cwd=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, executable=executable,
                                     cwd=cwd)
        self.pid = self.proc.pid
        self.lines = {"out": queue.Queue(), "err": queue.Queue()}
        self.seen = {"out": [], "err": []}
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "err"), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self, pipe, name):
        for line in iter(pipe.readline, b""):
            self.lines[name].put(line.decode(errors="replace"))
        self.lines[name].put(None)

    def expect(self, text, stream="out", timeout=WAIT):
        """Waits for a line containing `text` on `stream`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines[stream].get(timeout=max(left, 0.01))
            except queue.Empty:
                line = False
            if line is None or line is False:
                self.kill()
                raise AssertionError("%s: no line with %r on std%s within %.0f s; seen: %r" % (
                    " ".join(self.argv), text, stream, timeout, self.seen))
            self.seen[stream].append(line)
            if text in line:
                return line

    def locked_pid(self):
        """Waits for "locked <pid>" and returns the pid."""
        return int(self.expect("locked").split()[1])

    def release(self, timeout=WAIT):
        """Closes stdin (the holder's cue to end) and returns the exit status."""
        self.proc.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout=WAIT):
        # The readers may go on: a command that outlives the process keeps its pipes open.
        return self.proc.wait(timeout=timeout)

    def running(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def without_timings(text):
    """`text` with the time of flock(1)'s "getting lock took S seconds" lines as "<n>", as
    util-linux's own tests write it."""
    return re.sub(r"took \d+\.\d+ seconds", "took <n> seconds", text)


def took_and_executing(name, program):
    """The lines that flock(1) -v writes on stdout once it has the lock and runs `program`."""
    return "%s: getting lock took <n> seconds\n%s: executing %s\n" % (name, name, program)


def wait_until(condition, what, timeout=WAIT):
    """Polls `condition` until it holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting until " + what)
        time.sleep(0.02)


class CliTest(unittest.TestCase):
    """Holds a fresh directory and cleans up every process a test started."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fasteners_cli_")
        self.lock = os.path.join(self.dir, "lock")
        self.processes = []
        self.stray_pids = []

    def tearDown(self):
        for p in self.processes:
            p.kill()
        for pid in self.stray_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, argv, **kw):
        p = Process(argv, **kw)
        self.processes.append(p)
        return p

    def hold(self, *options, path=None, flock=False):
        """Starts `fasteners run OPTIONS PATH` holding the lock; returns (process, command pid)."""
        argv = [FLOCK] if flock else [FASTENERS, "run"]
        p = self.start(argv + list(options) + [path or self.lock, "sh", "-c", HOLD])
        child = p.locked_pid()
        self.stray_pids.append(child)
        return p, child

    def python_hold(self, kind, path=None):
        p = self.start([PYTHON, "-c", PY_LOCK, "hold", kind, path or self.lock])
        p.locked_pid()
        return p

    def assert_conflict(self, *args, code=1):
        """`fasteners run -n ARGS... true` cannot have the lock."""
        marker = os.path.join(self.dir, "ran")
        result = run("run", "-n", *args, "touch", marker)
        self.assertEqual(result.returncode, code, result.stderr)
        self.assertFalse(os.path.exists(marker), "the command ran without the lock")

    def assert_free(self, *args):
        result = run("run", "-n", *args, "echo", "ran")
        self.assertEqual((result.returncode, result.stdout), (0, "ran\n"), result.stderr)

    def status_json(self, path=None, **kw):
        result = run("status", "--json", path or self.lock, **kw)
        self.assertIn(result.returncode, (0, 1), result.stderr)
        doc = json.loads(result.stdout)
        self.assertEqual(result.returncode, 0 if doc["state"] == "free" else 1)
        return doc

    def assert_at_most_n_at_once(self, slots, argv):
        """Starts SLOTS + 2 of `argv + [COMMAND]` at once (fasteners run --slots SLOTS ...), each
        COMMAND logging how many run meanwhile; checks that they all succeed and that no more
        than SLOTS, and at some time SLOTS, ran at once."""
        running = os.path.join(self.dir, "running")
        os.mkdir(running)
        log = os.path.join(self.dir, "counts")
        runs = [self.start([*argv, "sh", "-c", CONCURRENCY, "sh", running, log, str(slots)])
                for _ in range(slots + 2)]
        for p in runs:
            self.assertEqual(p.wait(), 0, p.seen)
        with open(log) as f:
            counts = [int(line) for line in f]
        self.assertEqual(max(counts), slots, counts)

    def start_first_waiter(self, argv, status, slots, holders):
        """Starts `argv` (fasteners run -v --slots SLOTS ... true) behind `holders` of all SLOTS
        slots and waits until `status()` ((exit status, --json document) of the semaphore) shows it
        first in line; checks that document and returns (process, document)."""
        waiter = self.start(argv)
        waiter.expect("waiting for a slot", "err")

        def waiter_seen():
            return [h["pid"] for h in status()[1]["waiting"]] == [waiter.pid]

        wait_until(waiter_seen, "the waiter is first in line")
        code, doc = status()
        self.assertEqual((code, doc["state"], doc["semaphore"]),
                         (1, "full", {"slots": slots, "held": slots}))
        self.assertEqual(sorted(h["slot"] for h in doc["holders"]), list(range(slots)))
        self.assertEqual(sorted(h["pid"] for h in doc["holders"]),
                         sorted(p.pid for p in holders))
        self.assertIs(doc["waiting"][0]["waiting"], True)
        self.assertNotIn("slot", doc["waiting"][0])
        return waiter, doc

    def assert_one_line_error(self, result, code, *words):
        self.assertEqual(result.returncode, code, result.stdout + result.stderr)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("fasteners"), result.stderr)
        for word in words:
            self.assertIn(word, result.stderr)


class usage(CliTest):
    """--help, --version and every kind of bad input: flock(1)'s exit codes, one-line errors."""

    def test_help(self):
        result = run("--help")
        self.assertEqual(result.returncode, 0)
        for word in ("run", "status", "--version"):
            self.assertIn(word, result.stdout)
        result = run("run", "--help")
        self.assertEqual(result.returncode, 0)
        for word in ("LOCKFILE", "COMMAND", "FD", "--shared", "--exclusive", "--nonblocking",
                     "--timeout", "--conflict-exit-code", "--close", "--flock", "--verbose",
                     "--command", "--unlock", "--no-fork", "--version", "--fence",
                     "FASTENERS_FENCE",
                     'ln -s "$(command -v fasteners)" ~/bin/flock'):
            self.assertIn(word, result.stdout)
        result = run("status", "--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("--json", result.stdout)

    def test_version(self):
        # As flock(1), `run` takes them too, and long options may be abbreviated.
        for args in (["--version"], ["-V"], ["--vers"], ["run", "--version"], ["run", "-V"],
                     ["run", "--vers"]):
            result = run(*args)
            self.assertEqual((result.returncode, result.stdout), (0, "fasteners %s\n" % VERSION),
                             args)

    def test_no_or_unknown_subcommand(self):
        self.assert_one_line_error(run(), 64, "run or status")
        self.assert_one_line_error(run("lock"), 64, "'lock'")
        self.assert_one_line_error(run("--bogus"), 64)

    def test_unknown_option(self):
        for option in ("--bogus", "-q", "-nq"):
            self.assert_one_line_error(run("run", option, self.lock, "true"), 64)
        self.assertFalse(os.path.exists(self.lock))
        self.assert_one_line_error(run("status", "--bogus", self.lock), 64)

    def test_missing_arguments(self):
        self.assert_one_line_error(run("run"), 64, "LOCKFILE")
        self.assert_one_line_error(run("run", self.lock), 64, "no command", "FD")
        self.assert_one_line_error(run("run", "-s"), 64, "LOCKFILE")
        self.assert_one_line_error(run("run", self.lock, "-c"), 64)
        self.assert_one_line_error(run("run", "-w"), 64)
        self.assert_one_line_error(run("status"), 64, "LOCKFILE")
        self.assertFalse(os.path.exists(self.lock))

    def test_bad_timeout(self):
        # Each says what is wrong with the value.
        for value, why in (("abc", "not a number"), ("1s", "not a number"), ("", "empty"),
                           ("nan", "not a number"), ("-nan", "not a number"),
                           ("-1", "negative"), ("-0.5", "negative"), ("-inf", "negative"),
                           ("-1e400", "negative")):
            result = run("run", "-w", value, self.lock, "true")
            self.assert_one_line_error(result, 64, "timeout '%s'" % value, why)
        self.assert_one_line_error(run("run", "--timeout=x", self.lock, "true"), 64, "timeout")
        self.assertFalse(os.path.exists(self.lock))

    def test_timeout_too_small_to_count_is_zero(self):
        # 1e-400 is below the smallest double: one try, as -w 0 (and as flock(1) takes it).
        holder = self.start([FASTENERS, "run", self.lock, "sh", "-c", HOLD])
        self.stray_pids.append(holder.locked_pid())
        for value in ("1e-400", "-0", "0.0", "-1e-400", "1e-320", "0x0p0"):
            result, took = run_timed("run", "-w", value, "-E", "7", self.lock, "true")
            self.assertEqual(result.returncode, 7, (value, result.stderr))
            self.assertLess(took, WAIT / 3)
        holder.release()
        for value in ("1e-400", "-0"):
            result = run("run", "-w", value, self.lock, "echo", "ran")
            self.assertEqual((result.returncode, result.stdout), (0, "ran\n"), result.stderr)

    def test_timeout_in_hexadecimal(self):
        # As strtod reads it, and so flock(1): 0x0.8 is half a second.
        self.stray_pids.append(
            self.start([FASTENERS, "run", self.lock, "sh", "-c", HOLD]).locked_pid())
        result, took = run_timed("run", "-w", "0x0.8", "-E", "5", self.lock, "true")
        self.assertEqual(result.returncode, 5, result.stderr)
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, WAIT / 3)

    def test_timeout_too_large_to_count_waits_without_limit(self):
        # A wait longer than 10^9 seconds (31 years) never ends: it is a wait without limit.
        for value in ("1e400", "inf", "INFINITY", "1e308", "2e9"):
            holder = self.start([FASTENERS, "run", self.lock, "sh", "-c", HOLD])
            self.stray_pids.append(holder.locked_pid())
            waiter = self.start([FASTENERS, "run", "-v", "-w", value, self.lock, "echo", "got"])
            line = waiter.expect("waiting for the exclusive lock", "err")
            self.assertNotIn("at most", line)
            self.assertEqual(holder.release(), 0)
            self.assertEqual(waiter.wait(), 0, value)
            waiter.expect("got")

    def test_empty_operands(self):
        self.assert_one_line_error(run("status", ""), 64, "path", "empty")
        self.assert_one_line_error(run("status", "--json", ""), 64, "path", "empty")
        # flock(1)'s exit status for a lock file that cannot be opened.
        self.assert_one_line_error(run("run", "", "true"), 66, "path", "empty")
        for args in (["run", "--postgres", "host=/nonexistent port=1", "", "true"],
                     ["status", "--postgres", "host=/nonexistent port=1", ""],
                     ["status", "--postgres", "", "--json", ""]):
            self.assert_one_line_error(run(*args), 64, "name", "--postgres", "empty")

    def test_bad_conflict_exit_code(self):
        for value in ("256", "-1", "abc", "1.5", ""):
            result = run("run", "-E", value, self.lock, "true")
            self.assert_one_line_error(result, 64, "exit code")

    def test_ambiguous_abbreviation(self):
        for option, names in (("--n", ["--nb", "--nonblocking", "--no-fork"]),
                              ("--c", ["--conflict-exit-code", "--close"]),
                              ("--v=1", ["--verbose", "--version"])):
            result = run("run", option, self.lock, "true")
            self.assert_one_line_error(result, 64, "ambiguous", *names)
        self.assertFalse(os.path.exists(self.lock))
        # `status` takes abbreviations too.
        self.assertEqual(json.loads(run("status", "--js", self.lock).stdout)["state"], "free")

    def test_options_that_do_not_go_together(self):
        for args, words in ((["-F", "-o", self.lock, "true"], ["-F", "-o"]),
                            (["-u", self.lock, "true"], ["-u", "FD"]),
                            (["--postgres", "", "9"], ["descriptor", "--postgres"]),
                            (["--postgres", "", "-u", "9"], ["-u", "--postgres"]),
                            (["--postgres", "", "-F", "name", "true"], ["-F", "--postgres"])):
            self.assert_one_line_error(run("run", *args), 64, *words)
        self.assertFalse(os.path.exists(self.lock))

    def test_shell_command_with_more(self):
        self.assert_one_line_error(run("run", self.lock, "-c", "true", "extra"), 64, "-c")
        self.assert_one_line_error(run("run", "-c", "true", self.lock, "echo"), 64, "not both")

    def test_missing_lock_directory(self):
        missing = os.path.join(self.dir, "no", "such", "lock")
        for options in ([], ["--flock"], ["-s"]):
            result = run("run", *options, missing, "true")
            self.assert_one_line_error(result, 66, os.path.join(self.dir, "no", "such"),
                                       "does not exist")
        self.assertFalse(os.path.exists(os.path.join(self.dir, "no")))

    def test_lock_path_is_a_directory(self):
        result = run("run", self.dir, "true")
        self.assert_one_line_error(result, 66, "directory")
        # flock(1) locks directories, and so does --flock.
        result = run("run", "--flock", self.dir, "echo", "ok")
        self.assertEqual((result.returncode, result.stdout), (0, "ok\n"), result.stderr)

    def test_postgres_unsupported(self):
        if postgres_built():
            self.skipTest("this fasteners has --postgres (the postgres group tests it)")
        for args in (["run", "--postgres", "", "name", "true"],
                     ["status", "--postgres", "", "name"]):
            self.assert_one_line_error(run(*args), 69, "without PostgreSQL support")
        # Usage errors come first.
        self.assert_one_line_error(run("run", "--postgres", "", "--flock", "name", "true"), 64,
                                   "--flock")

    def test_command_cannot_be_executed(self):
        result = run("run", self.lock, os.path.join(self.dir, "no-such-program"))
        self.assert_one_line_error(result, 69, "no-such-program")
        script = os.path.join(self.dir, "not-executable")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n")
        result = run("run", self.lock, script)
        self.assert_one_line_error(result, 69, "not-executable")
        # The lock was released: the tool ended.
        self.assert_free(self.lock)


class run_(CliTest):
    """`fasteners run`: exit statuses, signals, -c, --, and every locking option."""

    def test_exit_status(self):
        for code in (0, 1, 42, 255):
            result = run("run", self.lock, "sh", "-c", "exit %d" % code)
            self.assertEqual(result.returncode, code, result.stderr)
        result = run("run", self.lock, "echo", "a b", "c")
        self.assertEqual(result.stdout, "a b c\n")

    def test_killed_by_signal(self):
        for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV):
            result = run("run", self.lock, "sh", "-c", "kill -%d $$" % sig)
            self.assertEqual(result.returncode, 128 + sig, result.stderr)

    def test_signal_to_command_from_outside(self):
        p, child = self.hold()
        os.kill(child, signal.SIGINT)
        self.assertEqual(p.wait(), 128 + signal.SIGINT)
        self.assert_free(self.lock)

    def test_shell_command(self):
        env = {k: v for k, v in os.environ.items() if k != "SHELL"}
        for args in (["-c", 'echo "$0"; exit 3', self.lock], [self.lock, "-c", 'echo "$0"; exit 3'],
                     ["--command", 'echo "$0"; exit 3', self.lock],
                     [self.lock, "--command=echo \"$0\"; exit 3"]):
            result = run("run", *args, env=env)
            self.assertEqual((result.returncode, result.stdout), (3, "/bin/sh\n"), result.stderr)
        # As flock(1), -c uses $SHELL.
        env["SHELL"] = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        result = run("run", self.lock, "-c", 'echo "$0"', env=env)
        self.assertEqual(result.stdout, env["SHELL"] + "\n")

    def test_double_dash(self):
        result = run("run", self.lock, "--", "sh", "-c", "exit 5")
        self.assertEqual(result.returncode, 5, result.stderr)
        result = run("run", "-s", "--", self.lock, "echo", "--")
        self.assertEqual((result.returncode, result.stdout), (0, "--\n"), result.stderr)
        # After -- even a name that looks like an option is the lock file.
        result = run("run", "--", "-x", "true", cwd=self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "-x")))

    def test_options_after_lock_file_belong_to_the_command(self):
        result = run("run", self.lock, "sh", "-c", 'echo "$@"', "sh", "-x", "-n", "--bogus")
        self.assertEqual((result.returncode, result.stdout), (0, "-x -n --bogus\n"), result.stderr)
        result = run("run", self.lock, "echo", "-w", "5")
        self.assertEqual(result.stdout, "-w 5\n")

    def test_lock_file_created_and_never_written(self):
        result = run("run", self.lock, "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(os.path.getsize(self.lock), 0)
        with open(self.lock, "w") as f:
            f.write("data")
        run("run", self.lock, "true")
        with open(self.lock) as f:
            self.assertEqual(f.read(), "data")

    def test_exclusive_is_the_default(self):
        self.hold()
        self.assert_conflict(self.lock)
        self.assert_conflict("-s", self.lock)
        self.assert_conflict("-x", self.lock)

    def test_exclusive_options(self):
        for option in ("-x", "-e", "--exclusive"):
            p, _ = self.hold(option)
            self.assert_conflict("-s", self.lock)
            self.assertEqual(p.release(), 0)

    def test_shared(self):
        for option in ("-s", "--shared"):
            p1, _ = self.hold(option)
            p2, _ = self.hold(option)  # A second reader gets in at once.
            self.assert_free("-s", self.lock)
            self.assert_conflict(self.lock)
            self.assertEqual((p1.release(), p2.release()), (0, 0))
            self.assert_free(self.lock)

    def test_last_of_shared_and_exclusive_wins(self):
        self.hold("-s")
        self.assert_conflict("-s", "-x", self.lock)
        self.assert_free("-x", "-s", self.lock)

    def test_nonblock(self):
        self.hold()
        for option in ("-n", "--nb", "--nonblock"):
            marker = os.path.join(self.dir, "ran")
            result, took = run_timed("run", option, self.lock, "touch", marker)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(result.stderr, "")  # Quiet, as flock(1), unless --verbose.
            self.assertFalse(os.path.exists(marker))
            self.assertLess(took, WAIT / 3)

    def test_conflict_exit_code(self):
        self.hold()
        self.assert_conflict("-E", "7", self.lock, code=7)
        self.assert_conflict("--conflict-exit-code=9", self.lock, code=9)
        self.assert_conflict("-E", "0", self.lock, code=0)
        self.assert_conflict("-E", "255", "-E", "3", self.lock, code=3)
        result = run("run", "-w", "0.1", "-E", "5", self.lock, "true")
        self.assertEqual(result.returncode, 5)
        # The command's own status is not the conflict code.
        free = os.path.join(self.dir, "free")
        self.assertEqual(run("run", "-n", "-E", "7", free, "sh", "-c", "exit 1").returncode, 1)

    def test_timeout_expires(self):
        self.hold()
        for args in (["-w", "0.5"], ["--timeout", "0.5"], ["--wait=0.5"], ["-w", ".5"]):
            marker = os.path.join(self.dir, "ran")
            result, took = run_timed("run", *args, self.lock, "touch", marker)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertFalse(os.path.exists(marker))
            self.assertGreaterEqual(took, 0.45)
            self.assertLess(took, WAIT / 3)

    def test_timeout_without_queued_signals(self):
        # With RLIMIT_SIGPENDING 0 no signal can be queued; a timed wait must still end at its
        # timeout with the conflict code and leave nothing held. (bash: dash has no ulimit -i.)
        holder, _ = self.hold()
        script = 'ulimit -i 0 && exec "$0" run -w 0.5 "$1" echo got'
        start = time.monotonic()
        waiter = subprocess.Popen(["bash", "-c", script, FASTENERS, self.lock],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.stray_pids.append(waiter.pid)
        try:
            out, err = waiter.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out = err = None
        if out is None:
            holder.release()
            time.sleep(0.5)
            held_by = [h["pid"] for h in self.status_json()["holders"]]
            waiter.kill()
            waiter.communicate()
            self.fail("fasteners run -w 0.5 without a signal queue did not end within 10 s; once "
                      "the holder left, the lock was held by %r (the waiter is %d)"
                      % (held_by, waiter.pid))
        took = time.monotonic() - start
        self.assertEqual(waiter.returncode, 1, err)
        self.assertEqual(out, "")
        self.assertGreaterEqual(took, 0.45)
        self.assertNotIn(waiter.pid, [h["pid"] for h in self.status_json()["holders"]])
        self.assertEqual(holder.release(), 0)
        self.assert_free(self.lock)

    def test_timeout_zero_is_one_try(self):
        self.hold()
        result, took = run_timed("run", "-w", "0", self.lock, "true")
        self.assertEqual(result.returncode, 1)
        self.assertLess(took, WAIT / 3)
        self.assert_free("-w", "0", os.path.join(self.dir, "other"))

    def test_timeout_met(self):
        for options in ([], ["--flock"]):
            holder, _ = self.hold(*options)
            waiter = self.start([FASTENERS, "run", *options, "-v", "-w", "60", self.lock, "echo",
                                 "got it"])
            waiter.expect("waiting", "err")
            self.assertEqual(holder.release(), 0)
            self.assertEqual(waiter.wait(), 0)
            waiter.expect("got it")

    def test_waits_as_long_as_needed(self):
        holder, _ = self.hold()
        waiter = self.start([FASTENERS, "run", "-v", self.lock, "echo", "got it"])
        waiter.expect("waiting", "err")
        time.sleep(0.3)
        self.assertTrue(waiter.running())
        self.assertEqual(holder.release(), 0)
        self.assertEqual(waiter.wait(), 0)
        waiter.expect("got it")

    def test_verbose(self):
        # flock(1)'s lines, where flock(1) writes them: on stdout, through its buffer (so after
        # the command's output when stdout is a pipe), named by the program.
        result = run("run", "-v", self.lock, "echo", "ran")
        self.assertEqual((result.returncode, without_timings(result.stdout), result.stderr),
                         (0, "ran\n" + took_and_executing("fasteners", "echo"), ""))
        result = run("run", "--verbose", self.lock, "-c", "exit 3",
                     env={k: v for k, v in os.environ.items() if k != "SHELL"})
        self.assertEqual((result.returncode, without_timings(result.stdout), result.stderr),
                         (3, took_and_executing("fasteners", "/bin/sh"), ""))
        result = run("run", "--verbose", self.lock, "sh", "-c", "kill $$")
        self.assertEqual((result.returncode, result.stderr), (128 + signal.SIGTERM, ""))
        holder, child = self.hold()
        # Nothing more than flock(1) says when it did not wait.
        for options in (["-n"], ["-w", "0"], ["--nb", "-E", "7"]):
            result = run("run", "-v", *options, self.lock, "true")
            self.assertEqual((result.returncode, result.stdout, result.stderr),
                             (7 if "7" in options else 1, "", "fasteners: failed to get lock\n"))
        # When it waits, it says on stderr whom for.
        result = run("run", "-v", "-w", "0.2", self.lock, "true")
        self.assertEqual((result.returncode, result.stdout), (1, ""), result.stderr)
        waiting, timed_out = result.stderr.splitlines()
        self.assertTrue(waiting.startswith("fasteners: waiting for the exclusive lock on '%s' "
                                           "(at most 0.2 seconds): held exclusive by pid %d"
                                           % (self.lock, holder.pid)), waiting)
        self.assertIn("sh -c " + HOLD, waiting)  # The holder's command line.
        if MECHANISM == "fcntl_ofd":
            self.assertIn("pid %d" % child, waiting)  # It shares the lock.
        self.assertEqual(timed_out, "fasteners: timeout while waiting to get lock")
        waiter = self.start([FASTENERS, "run", "-v", self.lock, "sh", "-c", "exit 4"])
        line = waiter.expect("waiting for the exclusive lock", "err")
        self.assertIn("held exclusive by pid %d" % holder.pid, line)
        holder.release()
        self.assertEqual(waiter.wait(), 4)
        self.assertEqual(without_timings(waiter.expect("executing")),
                         "fasteners: executing sh\n")
        self.assertEqual(without_timings("".join(waiter.seen["out"])),
                         took_and_executing("fasteners", "sh"))
        # Quiet without -v.
        self.assertEqual(run("run", self.lock, "true").stderr, "")

    def test_verbose_names_the_program_as_invoked(self):
        # As flock(1) names itself by program_invocation_short_name.
        link = os.path.join(self.dir, "locker")
        os.symlink(FASTENERS, link)
        result = subprocess.run([link, "run", "-v", self.lock, "true"], capture_output=True,
                                text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
        self.assertEqual((result.returncode, without_timings(result.stdout), result.stderr),
                         (0, took_and_executing("locker", "true"), ""))


class fence(CliTest):
    """`fasteners run --fence`: the command gets the lock's fencing token as FASTENERS_FENCE."""

    ECHO = 'echo "${FASTENERS_FENCE-unset}"'

    def token(self, *options, env=None):
        """The FASTENERS_FENCE that `fasteners run OPTIONS... LOCK` gives its command, as an int;
        "unset" when it gives none."""
        result = run("run", *options, self.lock, "sh", "-c", self.ECHO, env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout.strip()
        return text if text == "unset" else int(text)

    def test_tokens_increase(self):
        tokens = [self.token("--fence") for _ in range(4)]
        self.assertGreater(tokens[0], 0)
        self.assertEqual(tokens, sorted(set(tokens)), "tokens do not strictly increase")
        # The counter beside the lock file outlives the lock file.
        os.unlink(self.lock)
        after = self.token("--fence")
        self.assertGreater(after, tokens[-1])
        # Every form that runs a command gets it: -o, -F, -c and -w.
        later = [self.token("--fence", "-o"), self.token("--fence", "-F"),
                 self.token("--fence", "-w", "5")]
        result = run("run", "--fence", self.lock, "-c", self.ECHO)
        self.assertEqual(result.returncode, 0, result.stderr)
        later.append(int(result.stdout))
        self.assertEqual([after] + later, sorted(set([after] + later)))

    def test_shared_sees_latest_exclusive_token(self):
        self.assertEqual(self.token("--fence", "-s"), 0)  # No exclusive lock taken yet.
        self.token("--fence")
        latest = self.token("--fence")
        self.assertEqual(self.token("--fence", "-s"), latest)
        self.assertEqual(self.token("-s", "--fence"), latest)
        # A shared lock takes no token of its own: the next exclusive one is the one after.
        self.assertEqual(self.token("--fence"), latest + 1)

    def test_shared_beside_a_shared_holder(self):
        latest = self.token("--fence")
        self.assertGreater(latest, 0)
        p, _ = self.hold("-s")
        self.assertEqual(self.token("--fence", "-s", "-n"), latest)
        self.assertEqual(p.release(), 0)

    def test_absent_without_fence(self):
        env = {k: v for k, v in os.environ.items() if k != "FASTENERS_FENCE"}
        self.assertEqual(self.token(env=env), "unset")
        self.assertEqual(self.token("-s", env=env), "unset")
        # One given from outside passes through untouched without --fence, and gives way to the
        # lock's with it.
        env["FASTENERS_FENCE"] = "999999"
        self.assertEqual(self.token(env=env), 999999)
        self.assertLess(self.token("--fence", env=env), 999999)

    def test_refused_where_it_cannot_apply(self):
        marker = os.path.join(self.dir, "ran")
        cases = [
            (["--fence", "--slots", "2", self.lock, "touch", marker],
             "--fence cannot be used with --slots"),
            (["--fence", "--flock", self.lock, "touch", marker],
             "--fence cannot be used with --flock"),
            (["--fence", "0"], "--fence cannot be used with the descriptor form"),
            (["--fence", "-u", "0"], "--fence cannot be used with the descriptor form"),
        ]
        for args, message in cases:
            result = run("run", *args)
            self.assertEqual(result.returncode, 64, (args, result.stderr))
            self.assertIn(message, result.stderr, args)
            self.assertFalse(os.path.exists(marker), args)
        self.assertFalse(os.path.exists(self.lock + ".fence"))

    def test_refused_through_the_flock_link(self):
        os.mkdir(os.path.join(self.dir, "bin"))
        link = os.path.join(self.dir, "bin", "flock")
        os.symlink(FASTENERS, link)
        marker = os.path.join(self.dir, "ran")
        result = subprocess.run([link, "--fence", self.lock, "touch", marker],
                                capture_output=True, text=True, timeout=WAIT,
                                stdin=subprocess.DEVNULL)
        self.assertEqual(result.returncode, 64, result.stderr)
        self.assertIn("flock: --fence is not for flock", result.stderr)
        self.assertFalse(os.path.exists(marker))


class inheritance(CliTest):
    """The command inherits the lock (not with -o), as with flock(1); killed fasteners processes."""

    def descriptors_of_lock(self, *options):
        """The command's descriptors that refer to the lock file."""
        script = ("import os, sys\n"
                  "fds = [f for f in os.listdir('/proc/self/fd')\n"
                  "       if os.path.realpath('/proc/self/fd/' + f) == sys.argv[1]]\n"
                  "print(len(fds))\n")
        result = run("run", *options, self.lock, PYTHON, "-c", script,
                     os.path.realpath(self.lock))
        self.assertEqual(result.returncode, 0, result.stderr)
        return int(result.stdout)

    def test_command_inherits_one_descriptor(self):
        self.assertEqual(self.descriptors_of_lock(), 1)
        self.assertEqual(self.descriptors_of_lock("-s"), 1)
        self.assertEqual(self.descriptors_of_lock("--flock"), 1)

    def test_close_option_keeps_it_from_the_command(self):
        for option in ("-o", "--close"):
            self.assertEqual(self.descriptors_of_lock(option), 0)
            self.assertEqual(self.descriptors_of_lock(option, "--flock"), 0)

    def test_command_shares_the_lock(self):
        for options, mechanism in (([], MECHANISM), (["--flock"], "flock")):
            p, child = self.hold(*options)
            holders = {h["pid"]: h for h in self.status_json()["holders"]}
            self.assertIn(p.pid, holders)
            # The inherited descriptor is of the very open file that holds the lock, so the
            # command holds it too (classic fcntl locks belong to one process and cannot be).
            if mechanism != "fcntl_posix":
                self.assertIn(child, holders)
            else:
                self.assertNotIn(child, holders)
            self.assertEqual({h["mechanism"] for h in holders.values()}, {mechanism})
            p.release()

    def test_close_option_command_does_not_share(self):
        p, child = self.hold("-o")
        pids = {h["pid"] for h in self.status_json()["holders"]}
        self.assertEqual(pids, {p.pid})
        p.release()

    def test_killed_fasteners_lock_lives_with_command(self):
        for options, holds_on in (([], MECHANISM != "fcntl_posix"), (["--flock"], True)):
            p, child = self.hold(*options)
            p.proc.kill()
            self.assertEqual(p.wait(), -signal.SIGKILL)
            self.assertTrue(alive(child))
            if holds_on:
                self.assert_conflict(*options, self.lock)
            else:
                self.assert_free(*options, self.lock)  # Classic fcntl: the lock died with it.
            os.kill(child, signal.SIGTERM)
            wait_until(lambda: not alive(child) or _is_zombie(child), "the command ended")
            wait_until(lambda: run("run", "-n", *options, self.lock, "true").returncode == 0,
                       "the lock is free")

    def test_killed_fasteners_with_close_frees_lock(self):
        for options in (["-o"], ["-o", "--flock"]):
            p, child = self.hold(*options)
            self.assert_conflict(*options[1:], self.lock)
            p.proc.kill()
            p.wait()
            self.assertTrue(alive(child))
            self.assert_free(*options[1:], self.lock)

    def test_background_process_keeps_lock(self):
        # As with flock(1): the lock stays while anything the command left holds the descriptor.
        background = "sleep 300 >/dev/null 2>&1 & echo $!"
        for options, holds_on in (([], MECHANISM != "fcntl_posix"), (["--flock"], True),
                                  (["-o"], False)):
            result = run("run", *options, self.lock, "sh", "-c", background)
            self.assertEqual(result.returncode, 0, result.stderr)
            sleeper = int(result.stdout)
            self.stray_pids.append(sleeper)
            flock_options = ["--flock"] if "--flock" in options else []
            if holds_on:
                self.assert_conflict(*flock_options, self.lock)
            else:
                self.assert_free(*flock_options, self.lock)
            os.kill(sleeper, signal.SIGKILL)
            wait_until(lambda: run("run", "-n", *flock_options, self.lock, "true").returncode == 0,
                       "the lock is free")

    def test_sigterm_to_fasteners_is_not_forwarded(self):
        # flock(1) installs no handler: the signal ends it, and the command runs on.
        p, child = self.hold()
        p.proc.terminate()
        self.assertEqual(p.wait(), -signal.SIGTERM)
        self.assertTrue(alive(child))
        if MECHANISM != "fcntl_posix":
            self.assert_conflict(self.lock)

    def test_sigterm_while_waiting_ends_the_wait(self):
        self.hold()
        waiter = self.start([FASTENERS, "run", "-v", self.lock, "touch",
                             os.path.join(self.dir, "ran")])
        waiter.expect("waiting", "err")
        waiter.proc.send_signal(signal.SIGTERM)
        self.assertEqual(waiter.wait(), -signal.SIGTERM)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "ran")))


def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class status(CliTest):
    """`fasteners status`: free, held by each kind of holder, JSON, and what it must not do."""

    def test_missing_file_is_free_and_not_created(self):
        for path in (self.lock, os.path.join(self.dir, "no", "dir", "lock")):
            result = run("status", path)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("free", result.stdout)
            self.assertIn("does not exist", result.stdout)
            doc = self.status_json(path)
            self.assertEqual(doc, {"path": path, "exists": False, "state": "free",
                                   "holders": []})
        self.assertEqual(os.listdir(self.dir), [])

    def test_free_file(self):
        open(self.lock, "w").close()
        result = run("status", self.lock)
        self.assertEqual((result.returncode, result.stdout), (0, self.lock + ": free\n"))
        self.assertEqual(self.status_json()["state"], "free")
        self.assertTrue(self.status_json()["exists"])

    def check_holder(self, h, pid, kind, mechanism, command_part):
        self.assertEqual(h["pid"], pid)
        self.assertEqual(h["kind"], kind)
        self.assertEqual(h["mechanism"], mechanism)
        self.assertIn(command_part, h["command"])
        self.assertIs(h["inspectable"], True)
        self.assertIs(h["waiting"], False)
        self.assertIs(h["whole_file"], True)
        self.assertIsNone(h["since"])  # Linux does not tell.
        self.assertEqual(h["first_byte"], 0)

    def test_held_by_this_library(self):
        p, child = self.hold()
        result = run("status", self.lock)
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stdout.startswith(self.lock + ": held exclusive\n"), result.stdout)
        self.assertIn(str(p.pid), result.stdout)
        self.assertIn(MECHANISM, result.stdout)
        doc = self.status_json()
        self.assertEqual((doc["exists"], doc["state"]), (True, "exclusive"))
        holders = {h["pid"]: h for h in doc["holders"]}
        expected = {p.pid, child} if MECHANISM == "fcntl_ofd" else {p.pid}
        self.assertEqual(set(holders), expected)
        self.check_holder(holders[p.pid], p.pid, "exclusive", MECHANISM, "run")
        if child in holders:
            self.check_holder(holders[child], child, "exclusive", MECHANISM, "cat")
        p.release()
        self.assertEqual(self.status_json()["state"], "free")

    def test_shared_holders(self):
        p1, _ = self.hold("-s")
        p2, _ = self.hold("-s")
        python = self.python_hold("read")
        doc = self.status_json()
        self.assertEqual(doc["state"], "shared")
        kinds = {h["pid"]: (h["kind"], h["mechanism"]) for h in doc["holders"]}
        self.assertEqual(kinds[p1.pid], ("shared", MECHANISM))
        self.assertEqual(kinds[p2.pid], ("shared", MECHANISM))
        self.assertEqual(kinds[python.pid], ("shared", "fcntl_posix"))
        self.assertIn("held shared", run("status", self.lock).stdout)

    def test_held_by_python_fasteners(self):
        for kind, state in (("lock", "exclusive"), ("write", "exclusive"), ("read", "shared")):
            p = self.python_hold(kind)
            doc = self.status_json()
            self.assertEqual(doc["state"], state)
            self.assertEqual(len(doc["holders"]), 1, doc)
            self.check_holder(doc["holders"][0], p.pid, state, "fcntl_posix", "python")
            self.assertEqual(p.release(), 0)

    def test_held_by_flock1(self):
        for options, state in (([], "exclusive"), (["-s"], "shared")):
            p, child = self.hold(*options, flock=True)
            doc = self.status_json()
            self.assertEqual(doc["state"], state)
            holders = {h["pid"]: h for h in doc["holders"]}
            self.assertEqual(set(holders), {p.pid, child})  # flock(1) and its command share it.
            self.check_holder(holders[p.pid], p.pid, state, "flock", "flock")
            self.assertEqual(p.release(), 0)

    def test_directory_held_by_flock1(self):
        p, _ = self.hold(path=self.dir, flock=True)
        doc = self.status_json(self.dir)
        self.assertEqual(doc["state"], "exclusive")
        self.assertIn(p.pid, [h["pid"] for h in doc["holders"]])

    def test_waiting_writer(self):
        reader, _ = self.hold("-s")
        writer = self.start([FASTENERS, "run", "-v", self.lock, "true"])
        writer.expect("waiting", "err")

        def writer_seen():
            return any(h["waiting"] for h in self.status_json()["holders"])

        wait_until(writer_seen, "the writer waits at the gate")
        doc = self.status_json()
        self.assertEqual(doc["state"], "shared")
        waiting = [h for h in doc["holders"] if h["waiting"]]
        self.assertEqual([(h["pid"], h["kind"]) for h in waiting], [(writer.pid, "exclusive")])
        self.assertIn("(waiting)", run("status", self.lock).stdout)
        reader.release()
        self.assertEqual(writer.wait(), 0)

    def test_exact_while_other_locks_come_and_go(self):
        # /proc/locks is written a page at a time; locks taken and dropped meanwhile elsewhere
        # repeat or skip lines at page ends, which must not show as phantom or missing holders.
        for i in range(os.cpu_count() or 2):  # Enough to keep every core busy.
            os.mkdir(os.path.join(self.dir, "churn%d" % i))
            churn = self.start([PYTHON, "-c", CHURN, os.path.join(self.dir, "churn%d" % i)])
            churn.expect("churning")
        files = [os.path.join(self.dir, "held%d" % i) for i in range(150)]
        holder = self.start([PYTHON, "-c", FLOCK_MANY, *files])
        holder.locked_pid()
        for path in files:
            holders = self.status_json(path)["holders"]
            self.assertEqual([(h["pid"], h["mechanism"]) for h in holders], [(holder.pid, "flock")])

    def test_does_not_take_or_disturb_locks(self):
        p = self.python_hold("lock")  # Classic fcntl: the most fragile kind of lock.
        for _ in range(5):
            result = run("status", self.lock)  # Returns at once although the lock is taken.
            self.assertEqual(result.returncode, 1)
        self.assertFalse(python_try("lock", self.lock))
        p.release()
        self.assertTrue(python_try("lock", self.lock))

    def start_named(self, argv, cwd):
        """Starts ARGV with "fasteners" as its argv[0] in `cwd`, so that its command line, which
        `status` shows, does not depend on where the binary or the directory lives."""
        p = Process(["fasteners", *argv], executable=FASTENERS, cwd=cwd)
        self.processes.append(p)
        return p

    def test_json_escaping(self):
        name = 'odd "name" \\ \t\u00e9'
        path = os.path.join(self.dir, name)
        arg = 'quote " backslash \\ tab \t newline \n bell \a'
        p = self.start_named(["run", name, "sh", "-c", HOLD, "sh", arg], cwd=self.dir)
        p.locked_pid()
        doc = self.status_json(path)
        self.assertEqual(doc["path"], path)
        self.assertTrue(any(arg in h["command"] for h in doc["holders"]), doc)
        raw = os.fsencode(self.dir) + b"/bad-\xff"  # Not UTF-8.
        result = subprocess.run([FASTENERS, "status", "--json", raw], capture_output=True,
                                timeout=WAIT)
        doc = json.loads(result.stdout.decode("utf-8"))  # Valid UTF-8 and JSON.
        self.assertTrue(doc["path"].endswith("bad-\ufffd"), doc)
        result = run("status", path)  # Text: control characters escaped, one line per holder.
        self.assertEqual(result.stdout.splitlines()[0],
                         os.path.join(self.dir, 'odd "name" \\ \\t\u00e9') + ": held exclusive")
        self.assertIn("fasteners run %s sh -c %s sh %s" % (
            'odd "name" \\ \\t\u00e9', HOLD, 'quote " backslash \\ tab \\t newline \\n bell ?'),
            result.stdout)

    def test_long_command_shortened_in_the_table_only(self):
        arg = "x" * 300 + "-end"
        p = self.start_named(["run", "lock", "sh", "-c", HOLD, "sh", arg], cwd=self.dir)
        p.locked_pid()
        command = "fasteners run lock sh -c %s sh %s" % (HOLD, arg)
        doc = self.status_json()
        self.assertIn(command, [h["command"] for h in doc["holders"]])  # Whole in JSON.
        result = run("status", self.lock)
        row = [line for line in result.stdout.splitlines() if str(p.pid) in line]
        self.assertEqual(len(row), 1, result.stdout)
        self.assertTrue(row[0].endswith(command[:200] + "..."), row[0])  # Cut in the table.

    def test_long_path_is_never_shortened(self):
        directory = self.dir
        while len(directory) < 300:
            directory = os.path.join(directory, "d" * 50)
            os.mkdir(directory)
        path = os.path.join(directory, "lock")
        result = run("status", path)
        self.assertEqual((result.returncode, result.stdout),
                         (0, path + ": free (the file does not exist)\n"), result.stderr)
        p, _ = self.hold(path=path)
        result = run("status", path)
        self.assertEqual(result.stdout.splitlines()[0], path + ": held exclusive")
        self.assertEqual(self.status_json(path)["path"], path)
        p.release()

    @unittest.skipUnless(os.geteuid() == 0, "needs root to start a process of another user")
    def test_path_that_cannot_be_inspected(self):
        os.chmod(self.dir, 0o700)
        open(self.lock, "w").close()
        result = run("status", self.lock, as_nobody=True)
        self.assert_one_line_error(result, 66, "cannot inspect", self.lock)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to start a process of another user")
    def test_processes_that_cannot_be_inspected(self):
        os.chmod(self.dir, 0o755)
        # Classic fcntl locks name their owner, which needs no inspection.
        python = self.python_hold("lock")
        doc = json.loads(run("status", "--json", self.lock, as_nobody=True).stdout)
        self.assertEqual([(h["pid"], h["inspectable"]) for h in doc["holders"]],
                         [(python.pid, True)])
        python.release()
        # Open-file-description and flock(2) locks name no owner: every process that this user
        # may not inspect is a possible holder.
        for options, flock in (([], False), ([], True)):
            p, child = self.hold(*options, flock=flock)
            result = run("status", "--json", self.lock, as_nobody=True)
            self.assertEqual(result.returncode, 1, result.stderr)
            doc = json.loads(result.stdout)
            self.assertEqual(doc["state"], "exclusive")
            pids = {h["pid"]: h["inspectable"] for h in doc["holders"]}
            if not flock and MECHANISM == "fcntl_posix":
                self.assertEqual(pids, {p.pid: True})
                continue
            self.assertIn(p.pid, pids)
            self.assertIn(child, pids)
            self.assertEqual(set(pids.values()), {False}, doc)
            result = run("status", self.lock, as_nobody=True)
            self.assertEqual(result.returncode, 1)
            self.assertIn("may not inspect", result.stdout)
            p.release()


# A command for `run --slots N` that tells how many such commands run at once: it puts a file of
# its own in $1 while it runs, and writes to $2, a line at a time, how many files it sees there,
# until it has seen $3 (all N at once) and then for a little longer, or for at most about 2 s.
CONCURRENCY = r"""
dir=$1; log=$2; n=$3
touch "$dir/$$"
i=0; seen_n=0
while [ $i -lt 20 ]; do
  count=$(ls "$dir" | wc -l)
  echo $count >> "$log"
  if [ $count -ge $n ]; then seen_n=$((seen_n + 1)); fi
  [ $seen_n -ge 3 ] && break
  i=$((i + 1)); sleep 0.1
done
rm "$dir/$$"
"""


class semaphore(CliTest):
    """`fasteners run --slots N` and `fasteners status` on a semaphore file."""

    def setUp(self):
        super().setUp()
        self.sem = os.path.join(self.dir, "jobs.sem")

    def hold_slot(self, slots):
        """Starts `fasteners run --slots SLOTS` holding a slot; returns (process, command pid)."""
        return self.hold("--slots", str(slots), path=self.sem)

    def semaphore_status(self):
        """`fasteners status --json` on the semaphore: (exit status, document)."""
        result = run("status", "--json", self.sem)
        self.assertIn(result.returncode, (0, 1), result.stderr)
        return result.returncode, json.loads(result.stdout)

    def test_at_most_n_commands_at_once(self):
        slots = 3
        self.assert_at_most_n_at_once(slots, [FASTENERS, "run", "--slots", str(slots), self.sem])
        with open(self.sem) as f:
            self.assertEqual(f.readline(), "fasteners semaphore: %d slots\n" % slots)

    def test_one_slot_excludes(self):
        holder, _ = self.hold_slot(1)
        self.assert_conflict("--slots", "1", self.sem)
        holder.release()
        self.assert_free("--slots", "1", self.sem)

    def test_nonblocking_fails_when_all_slots_are_taken(self):
        first, _ = self.hold_slot(2)
        self.assert_free("--slots", "2", self.sem)  # One slot is still free.
        self.hold_slot(2)
        self.assert_conflict("--slots", "2", self.sem)
        self.assert_conflict("-E", "75", "--slots", "2", self.sem, code=75)
        result = run("run", "-n", "-v", "--slots", "2", self.sem, "true")
        self.assertEqual(result.returncode, 1)
        self.assertIn("fasteners: failed to get a slot", result.stderr)
        first.release()
        self.assert_free("--slots", "2", self.sem)

    def test_timeout_no_sooner_than_asked(self):
        self.hold_slot(1)
        result, took = run_timed("run", "-w", "0.6", "-v", "--slots", "1", self.sem, "true")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertGreaterEqual(took, 0.6)
        self.assertLess(took, WAIT)
        self.assertIn("waiting for a slot of the semaphore '%s' (1 slot)" % self.sem,
                      result.stderr)
        self.assertIn("fasteners: timeout while waiting to get a slot", result.stderr)
        result = run("run", "-w", "0.2", "-E", "9", "--slots", "1", self.sem, "true")
        self.assertEqual(result.returncode, 9, result.stderr)

    def test_waiter_runs_when_a_slot_is_freed(self):
        holder, child = self.hold_slot(1)
        waiter = self.start([FASTENERS, "run", "-v", "--slots", "1", self.sem, "echo", "ran"])
        line = waiter.expect("waiting for a slot", "err")
        self.assertIn("pid %d" % holder.pid, line)
        self.assertIn("in slot 0", line)
        self.assertTrue(waiter.running())
        self.assertEqual(holder.release(), 0)
        self.assertEqual(waiter.wait(), 0)
        self.assertIn("ran", waiter.expect("ran"))
        self.assertIn("fasteners: getting a slot took", waiter.expect("getting a slot"))

    def test_command_status_shell_command_and_close(self):
        for options in ([], ["-o"]):
            result = run("run", *options, "--slots", "2", self.sem, "sh", "-c", "exit 7")
            self.assertEqual(result.returncode, 7, result.stderr)
        result = run("run", "--slots", "2", self.sem, "-c", "echo shell")
        self.assertEqual((result.returncode, result.stdout), (0, "shell\n"), result.stderr)
        # The slot is fasteners', so it ends with the command, whatever the command left running.
        one = os.path.join(self.dir, "one.sem")
        result = run("run", "--slots", "1", one, "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.stray_pids.append(int(result.stdout))
        self.assertTrue(alive(int(result.stdout)))
        self.assert_free("--slots", "1", one)

    def test_mismatched_slots_names_both_numbers(self):
        self.assert_free("--slots", "2", self.sem)
        result = run("run", "--slots", "3", self.sem, "true")
        self.assert_one_line_error(result, 64, "has 2 slots", "not 3", self.sem)
        self.assertEqual(run("run", "-n", "--slots", "2", self.sem, "true").returncode, 0)

    def test_not_a_semaphore_file(self):
        with open(self.lock, "w") as f:
            f.write("something else\n")
        result = run("run", "--slots", "2", self.lock, "true")
        self.assert_one_line_error(result, 64, "not a semaphore file")

    def test_invalid_slots(self):
        for value in ("0", "000", "-1", "", "abc", "1.5", " 2", "0x2", "99999999999999999999999",
                      "1000000"):
            result = run("run", "--slots", value, self.sem, "true")
            self.assert_one_line_error(result, 64, "slots")
            self.assertFalse(os.path.exists(self.sem), value)

    def test_refused_options(self):
        for options, word in ((["-s"], "-s"), (["--flock"], "--flock"), (["-F"], "-F")):
            result = run("run", *options, "--slots", "2", self.sem, "true")
            self.assert_one_line_error(result, 64, word)
        result = run("run", "--slots", "2", "9")
        self.assert_one_line_error(result, 64, "no command given")
        self.assertFalse(os.path.exists(self.sem))

    def test_killed_holder_frees_its_slot(self):
        holder, child = self.hold_slot(1)
        self.assert_conflict("--slots", "1", self.sem)
        holder.proc.send_signal(signal.SIGKILL)
        holder.wait()
        self.assertTrue(alive(child))  # The command runs on; the slot was fasteners'.
        self.assert_free("--slots", "1", self.sem)

    def test_status_lists_slot_holders_and_first_waiter(self):
        holders = [self.hold_slot(3)[0] for _ in range(2)]
        result = run("status", self.sem)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "%s: semaphore: 2 of 3 slots held" % self.sem)
        for p in holders:
            self.assertTrue(any(str(p.pid) in l and re.search(r"slot [0-2]\b", l)
                                for l in lines), result.stdout)
        code, doc = self.semaphore_status()
        self.assertEqual(code, 0)
        self.assertEqual((doc["path"], doc["exists"], doc["state"], doc["semaphore"]),
                         (self.sem, True, "held", {"slots": 3, "held": 2}))
        self.assertEqual(sorted(h["pid"] for h in doc["holders"]),
                         sorted(p.pid for p in holders))
        self.assertEqual(len({h["slot"] for h in doc["holders"]}), 2)
        for h in doc["holders"]:
            self.assertIn(h["slot"], range(3))
            self.assertIn("--slots", h["command"])
            self.assertEqual(h["mechanism"], MECHANISM)
        self.assertEqual(doc["waiting"], [])

        holders.append(self.hold_slot(3)[0])
        waiter, doc = self.start_first_waiter(
            [FASTENERS, "run", "-v", "--slots", "3", self.sem, "true"], self.semaphore_status, 3,
            holders)
        self.assertIn("run", doc["waiting"][0]["command"])
        result = run("status", self.sem)
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stdout.startswith("%s: semaphore: 3 of 3 slots held\n" % self.sem))
        self.assertTrue(any(str(waiter.pid) in l and "waiting (first in line)" in l
                            for l in result.stdout.splitlines()), result.stdout)
        # A second waiter waits behind the first: listed after it, not first in line.
        second = self.start([FASTENERS, "run", "--slots", "3", self.sem, "true"])
        wait_until(lambda: [h["pid"] for h in self.semaphore_status()[1]["waiting"]]
                   == [waiter.pid, second.pid], "the second waiter is in line")
        code, doc = self.semaphore_status()
        self.assertEqual([h["first_in_line"] for h in doc["waiting"]], [True, False])
        result = run("status", self.sem)
        self.assertTrue(any(str(second.pid) in l and re.search(r"\bwaiting\b", l)
                            and "first in line" not in l
                            for l in result.stdout.splitlines()), result.stdout)
        holders[0].release()
        self.assertEqual(waiter.wait(), 0)
        self.assertEqual(second.wait(), 0)
        for p in holders[1:]:
            p.release()
        code, doc = self.semaphore_status()
        self.assertEqual((code, doc["state"], doc["semaphore"], doc["holders"], doc["waiting"]),
                         (0, "free", {"slots": 3, "held": 0}, [], []))
        self.assertEqual(run("status", self.sem).stdout,
                         "%s: semaphore: 0 of 3 slots held\n" % self.sem)


class flock_interop(CliTest):
    """`fasteners run --flock` and util-linux flock(1) exclude each other, both ways."""

    def test_flock1_holds(self):
        p, _ = self.hold(flock=True)
        self.assert_conflict("--flock", self.lock)
        self.assert_conflict("--flock", "-s", self.lock)
        self.assert_free(self.lock)  # fcntl and flock(2) locks do not see each other.
        self.assertEqual(p.release(), 0)
        self.assert_free("--flock", self.lock)

    def test_flock1_holds_shared(self):
        p, _ = self.hold("-s", flock=True)
        self.assert_free("--flock", "-s", self.lock)
        self.assert_conflict("--flock", self.lock)
        p.release()

    def test_fasteners_holds(self):
        p, _ = self.hold("--flock")
        self.assertFalse(flock_try(self.lock))
        self.assertFalse(flock_try(self.lock, "-s"))
        self.assertEqual(p.release(), 0)
        self.assertTrue(flock_try(self.lock))

    def test_fasteners_holds_shared(self):
        p, _ = self.hold("--flock", "-s")
        self.assertTrue(flock_try(self.lock, "-s"))
        self.assertFalse(flock_try(self.lock, "-x"))
        p.release()

    def test_each_waits_for_the_other(self):
        p, _ = self.hold(flock=True)
        waiter = self.start([FASTENERS, "run", "--flock", "-v", self.lock, "echo", "got it"])
        waiter.expect("waiting", "err")
        p.release()
        self.assertEqual(waiter.wait(), 0)
        p, _ = self.hold("--flock")
        waiter = self.start([FLOCK, "-w", "60", self.lock, "echo", "got it"])
        time.sleep(0.3)
        self.assertTrue(waiter.running())
        p.release()
        self.assertEqual(waiter.wait(), 0)
        waiter.expect("got it")

    def test_timeout_against_flock1(self):
        self.hold(flock=True)
        result, took = run_timed("run", "--flock", "-w", "0.5", "-E", "9", self.lock, "true")
        self.assertEqual(result.returncode, 9)
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, WAIT / 3)

    def test_directory(self):
        p, _ = self.hold(path=self.dir, flock=True)
        self.assert_conflict("--flock", self.dir)
        p.release()
        p, _ = self.hold("--flock", path=self.dir)
        self.assertFalse(flock_try(self.dir))
        p.release()
        self.assertTrue(flock_try(self.dir))


# Runs the commands given as JSON lists and prints their exit statuses and outputs as JSON: what
# flock_compat runs inside a mount namespace of its own.
RUN_ALL = r"""
import json, subprocess, sys
results = []
for argv in json.loads(sys.argv[1]):
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    results.append([r.returncode, r.stdout, r.stderr])
print(json.dumps(results))
"""


class flock_compat(CliTest):
    """`fasteners run` as a drop-in for util-linux flock(1): each case run through both, with the
    same exit status: abbreviated long options, scripts without #!, lock files that cannot be
    created, the descriptor form (FD, -u) and -F."""

    def tools(self, *fasteners_options):
        """(name, argv) of flock(1) and of `fasteners run FASTENERS_OPTIONS`."""
        return [("flock(1)", [FLOCK]), ("fasteners run", [FASTENERS, "run", *fasteners_options])]

    def assert_same(self, args, code, stdout=None, fasteners_options=(), env=None):
        """Both tools given ARGS exit with `code` (and print `stdout`); returns fasteners'."""
        for name, argv in self.tools(*fasteners_options):
            result = subprocess.run(argv + list(args), capture_output=True, text=True,
                                    timeout=WAIT * 2, stdin=subprocess.DEVNULL, env=env)
            self.assertEqual(result.returncode, code, "%s %s: %s" % (name, args, result.stderr))
            if stdout is not None:
                self.assertEqual(result.stdout, stdout, "%s %s" % (name, args))
        return result

    def shell(self, script, tool, **extra):
        """Starts `sh -c SCRIPT` with $LOCK, $RUN (the tool's command) and $EXTRA... set."""
        env = dict(os.environ, LOCK=self.lock, RUN=" ".join(tool), **extra)
        return self.start(["sh", "-c", script], env=env)

    def test_long_option_abbreviations(self):
        for option in ("--nonblocking", "--nonblock", "--nonb", "--nb", "--exc", "--sh"):
            self.assert_same([option, self.lock, "echo", "ok"], 0, "ok\n")
        self.hold(flock=True)
        for options, code in ((["--nonblocking"], 1), (["--nonb"], 1), (["--time", "0.1"], 1),
                              (["--timeout=0.1"], 1), (["--wai", "0.1"], 1),
                              (["-n", "--conf", "7"], 7), (["-n", "--conflict-exit=7"], 7),
                              (["-n", "--co", "7"], 7), (["-n", "--co=7"], 7),
                              (["--n"], 64), (["--c"], 64), (["--ver"], 64), (["--bogus"], 64),
                              (["--comm", "true"], 64)):
            self.assert_same(options + [self.lock, "true"], code, fasteners_options=["--flock"])
        for option in ("--vers", "--he"):
            self.assert_same([option], 0)
        result = self.assert_same(["--n", self.lock, "true"], 64)
        for name in ("--nonblocking", "--no-fork"):
            self.assertIn(name, result.stderr)

    def test_script_without_interpreter_line(self):
        # execvp runs a file that the kernel cannot execute with /bin/sh.
        script = os.path.join(self.dir, "script")
        with open(script, "w") as f:
            f.write('echo hello "$1"; exit 3\n')
        os.chmod(script, 0o755)
        env = dict(os.environ, PATH=self.dir + os.pathsep + os.environ.get("PATH", ""))
        for args in ([script, "you"], ["script", "you"], ["-F", script, "you"]):
            options, args = (["-F"], args[1:]) if args[0] == "-F" else ([], args)
            for mechanism in ([], ["--flock"]):
                self.assert_same(options + [self.lock] + args, 3, "hello you\n",
                                 fasteners_options=mechanism, env=env)

    def in_mount_namespace(self, mount, commands):
        """Runs the shell commands `mount` (with $1: a fresh directory) and then `commands` (argv
        lists) in a mount namespace of its own, whose tmpfs mounts the rest of the system never
        sees: as root, or where it is not, as root of a user namespace of its own. Returns
        [(exit status, stdout, stderr)] of the commands. Skips the test, saying why, when not
        root and user namespaces are not available; as root it must work."""
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        root = os.geteuid() == 0
        prefix = [unshare, "-m", "--propagation", "private"] if root else [unshare, "-r", "-m"]
        mount_point = os.path.join(self.dir, "mnt")
        os.mkdir(mount_point)
        script = '%s || exit 100\nshift\nexec "$@"' % mount
        result = subprocess.run(prefix + ["sh", "-c", script, "sh", mount_point, PYTHON, "-c",
                                          RUN_ALL, json.dumps(commands)],
                                capture_output=True, text=True, timeout=WAIT * 4)
        if result.returncode != 0 and not root:
            reason = ("not root, and cannot mount a file system in a user namespace of its own "
                      "(%s): %s" % (" ".join(prefix), result.stderr.strip()))
            print("\nskipped %s: %s" % (self.id(), reason), file=sys.stderr)
            self.skipTest(reason)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout), mount_point

    def check_cannot_create(self, mount, error):
        lock = os.path.join(self.dir, "mnt", "lock")
        cases = [[FLOCK, lock, "true"], [FLOCK, "-s", lock, "true"],
                 [FASTENERS, "run", lock, "true"], [FASTENERS, "run", "-s", lock, "true"],
                 [FASTENERS, "run", "--flock", lock, "true"],
                 [FASTENERS, "run", "--flock", "-n", "-s", lock, "true"]]
        results, _ = self.in_mount_namespace(mount, cases)
        for argv, (code, _, stderr) in zip(cases, results):
            self.assertEqual(code, 73, "%s: %s" % (argv, stderr))  # EX_CANTCREAT
            self.assertIn(error, stderr)
            if argv[0] == FASTENERS:
                self.assert_one_line_error(subprocess.CompletedProcess(argv, code, "", stderr),
                                           73, lock)

    def test_read_only_file_system(self):
        self.check_cannot_create('mount -t tmpfs -o ro,size=64k fasteners-ro "$1"',
                                 "Read-only file system")

    def test_full_file_system(self):
        # A tmpfs with a handful of inodes, all of them used up.
        fill = ('mount -t tmpfs -o size=64k,nr_inodes=8 fasteners-full "$1" && i=0 && '
                'while [ $i -lt 100 ] && touch "$1/fill$i" 2>/dev/null; do i=$((i+1)); done && '
                '[ $i -lt 100 ]')
        self.check_cannot_create(fill, "No space left on device")

    def hold_descriptor(self, tool, options="", redirect="9<>", unlock=False):
        """A shell that opens the lock file as descriptor 9, locks it with `TOOL OPTIONS 9` (and
        releases it with `TOOL -u 9`), then prints "locked PID" and waits for its stdin to close,
        with the descriptor open."""
        script = 'exec %s"$LOCK"; $RUN %s 9 || exit $?; %secho locked $$; cat >/dev/null' % (
            redirect, options, "$RUN -u 9 || exit $?; " if unlock else "")
        p = self.shell(script, tool)
        self.assertEqual(p.locked_pid(), p.pid)
        return p

    def test_descriptor_form_flock(self):
        for name, tool in self.tools("--flock"):
            p = self.hold_descriptor(tool, "-n")
            # The lock outlived the tool and stays with the shell's open file.
            self.assertFalse(flock_try(self.lock), name)
            self.assertFalse(flock_try(self.lock, "-s"), name)
            self.assert_conflict("--flock", self.lock)
            holders = self.status_json()["holders"]
            self.assertEqual({h["mechanism"] for h in holders}, {"flock"}, name)
            self.assertIn(p.pid, [h["pid"] for h in holders], name)  # The shell.
            self.assertEqual(p.release(), 0)
            self.assertTrue(flock_try(self.lock), name)

    def test_descriptor_form_default_mechanism(self):
        # An open-file-description lock: this library's and python-fasteners' locks see it.
        p = self.hold_descriptor([FASTENERS, "run"], "-n")
        self.assert_conflict(self.lock)
        self.assert_conflict("-s", self.lock)
        for kind in ("lock", "read", "write"):
            self.assertFalse(python_try(kind, self.lock), kind)
        self.assert_free("--flock", self.lock)  # Another mechanism: no conflict.
        doc = self.status_json()
        self.assertEqual(doc["state"], "exclusive")
        holders = {h["pid"]: h for h in doc["holders"]}
        self.assertIn(p.pid, holders)  # The shell, which holds the open file.
        self.assertEqual(holders[p.pid]["mechanism"], "fcntl_ofd")
        self.assertTrue(holders[p.pid]["whole_file"])
        self.assertIn("sh -c", holders[p.pid]["command"])
        self.assertIn(str(p.pid), run("status", self.lock).stdout)
        self.assertEqual(p.release(), 0)
        self.assert_free(self.lock)
        for kind in ("lock", "read", "write"):
            self.assertTrue(python_try(kind, self.lock), kind)

    def test_descriptor_form_shared(self):
        for redirect in ("9<>", "9<"):
            open(self.lock, "a").close()
            p1 = self.hold_descriptor([FASTENERS, "run"], "-s", redirect)
            p2 = self.hold_descriptor([FASTENERS, "run"], "-s -n", redirect)
            self.assert_free("-s", self.lock)
            self.assertTrue(python_try("read", self.lock))
            self.assert_conflict(self.lock)
            self.assertEqual(self.status_json()["state"], "shared")
            self.assertEqual((p1.release(), p2.release()), (0, 0))
        p = self.hold_descriptor([FASTENERS, "run"], "", "9>")  # Exclusive: open for writing.
        self.assert_conflict("-s", self.lock)
        p.release()

    def test_descriptor_form_unlock(self):
        # Free again although the shell still holds the descriptor.
        for name, tool in self.tools("--flock"):
            p = self.hold_descriptor(tool, "-n", unlock=True)
            self.assertTrue(flock_try(self.lock), name)
            p.release()
        p = self.hold_descriptor([FASTENERS, "run"], "-n", unlock=True)
        self.assert_free(self.lock)
        self.assertTrue(python_try("lock", self.lock))
        p.release()

    def test_descriptor_form_conflict(self):
        self.hold(flock=True)
        script = 'exec 9<>"$LOCK"; $RUN %s 9; echo $?'
        for options, code in (("-n", 1), ("-n -E 7", 7), ("-w 0.2", 1), ("--nonb", 1)):
            for name, tool in self.tools("--flock"):
                p = self.shell(script % options, tool)
                self.assertEqual(p.expect("").strip(), str(code), name)
        self.hold()
        p = self.shell(script % "-n", [FASTENERS, "run"])
        self.assertEqual(p.expect("").strip(), "1")

    def test_descriptor_form_waits(self):
        holder, _ = self.hold()
        p = self.shell('exec 9<>"$LOCK"; $RUN -v 9 && echo locked $$; cat >/dev/null',
                       [FASTENERS, "run"])
        line = p.expect("waiting", "err")
        self.assertIn("descriptor 9", line)
        self.assertIn("pid %d" % holder.pid, line)
        holder.release()
        self.assertEqual(p.locked_pid(), p.pid)
        self.assert_conflict(self.lock)

    def test_descriptor_not_open(self):
        self.assert_same(["-n", "9"], 65)  # EX_DATAERR, flock(1)'s status for EBADF.
        self.assert_same(["-u", "9"], 65)
        result = run("run", "9")
        self.assert_one_line_error(result, 65, "descriptor 9", "not open", "9<>FILE")

    def test_descriptor_form_access_mode(self):
        # fcntl read locks need a descriptor open for reading, write locks one open for writing.
        for redirect, options, words in (("9>", "-s", ["writing only", "9<>FILE", "--flock"]),
                                         ("9<", "", ["reading only", "9<>FILE", "-s"])):
            open(self.lock, "a").close()
            p = self.shell('exec %s"$LOCK"; $RUN %s 9' % (redirect, options), [FASTENERS, "run"])
            self.assertEqual(p.wait(), 65)
            line = p.expect("descriptor 9", "err")
            for word in words + [os.path.realpath(self.lock)]:
                self.assertIn(word, line)
            # flock(2) does not care, with flock(1) or --flock.
            for name, tool in self.tools("--flock"):
                p = self.shell('exec %s"$LOCK"; $RUN %s 9' % (redirect, options), tool)
                self.assertEqual(p.wait(), 0, name)

    def test_no_fork(self):
        for name, tool in self.tools() + self.tools("--flock")[1:]:
            for option in ("-F", "--no-fork"):
                p = self.start(tool + [option, self.lock, "sh", "-c", HOLD])
                # The command is the very process: nothing forked.
                self.assertEqual(p.locked_pid(), p.pid, name)
                mechanism = "flock" if tool[0] == FLOCK or "--flock" in tool else MECHANISM
                holders = self.status_json()["holders"]
                self.assertEqual({(h["pid"], h["mechanism"]) for h in holders},
                                 {(p.pid, mechanism)}, name)
                if mechanism == "flock":
                    self.assertFalse(flock_try(self.lock), name)
                else:
                    self.assert_conflict(self.lock)
                self.assertEqual(p.release(), 0)
        for tool_options in ([], ["--flock"]):
            self.assert_same(["-F", self.lock, "sh", "-c", "exit 7"], 7,
                             fasteners_options=tool_options)
            self.assert_same(["-F", self.lock, "-c", "echo $0"], 0, "/bin/sh\n",
                             fasteners_options=tool_options,
                             env={k: v for k, v in os.environ.items() if k != "SHELL"})
            self.assert_same(["-F", self.lock, os.path.join(self.dir, "missing")], 69,
                             fasteners_options=tool_options)
            self.assert_same(["-F", "-o", self.lock, "true"], 64, fasteners_options=tool_options)
        self.hold()
        self.assert_conflict("-F", self.lock)


# util-linux's tests/ts/flock/unlock (2.38 and later), ported: the test shell holds descriptor 10
# of the lock file; `flock -u 10` releases the lock although the descriptor stays open, so a
# flock of the file with --wait 0 (one try) gets it. Arguments: the flock to test, the lock file,
# the output file and the error log; the timings of the output become "<n>", as there.
UNLOCK_TS = r"""
TS_CMD_FLOCK="$1" LOCK_FILENAME="$2" TS_OUTPUT="$3" TS_ERRLOG="$4"
LOCK_FD=10
exec 10<>"$LOCK_FILENAME"

{
    "$TS_CMD_FLOCK" --exclusive --nonblock --verbose "$LOCK_FD"
    "$TS_CMD_FLOCK" --unlock "$LOCK_FD"
    # A timeout of 0 should be interpreted as --nonblock
    "$TS_CMD_FLOCK" --exclusive --wait 0 --verbose "$LOCK_FILENAME" true
} >>"$TS_OUTPUT" 2>>"$TS_ERRLOG"

sed -i -E 's@(flock.*took) [0-9]+\.[0-9]+ (seconds$)@\1 <n> \2@g' "$TS_OUTPUT" 2>>"$TS_ERRLOG"
"""

# What tests/expected/flock/unlock holds.
UNLOCK_EXPECTED = ("flock: getting lock took <n> seconds\n"
                   "flock: getting lock took <n> seconds\n"
                   "flock: executing true\n")


class flock_link(CliTest):
    """fasteners invoked through a link named flock is `fasteners run --flock`: side by side with
    util-linux flock(1), each case gives the same exit status, stdout and stderr (timings and the
    line that says whom it waits for aside), and util-linux's own unlock test passes."""

    def setUp(self):
        super().setUp()
        os.mkdir(os.path.join(self.dir, "bin"))
        self.link = os.path.join(self.dir, "bin", "flock")
        os.symlink(FASTENERS, self.link)
        self.no_shell = {k: v for k, v in os.environ.items() if k != "SHELL"}

    def call(self, tool, args, env=None):
        """(exit status, stdout, stderr) of TOOL ARGS..., timings written as "<n>"."""
        result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=WAIT * 2,
                                stdin=subprocess.DEVNULL, env=env)
        return (result.returncode, without_timings(result.stdout),
                without_timings(result.stderr))

    def assert_same(self, args, env=None):
        """flock(1) and the link given ARGS answer alike; returns flock(1)'s answer."""
        expected = self.call(FLOCK, args, env)
        self.assertEqual(self.call(self.link, args, env), expected, args)
        return expected

    def test_link_takes_flock2_locks(self):
        p = self.start([self.link, self.lock, "sh", "-c", HOLD])
        self.stray_pids.append(p.locked_pid())
        self.assertFalse(flock_try(self.lock))
        self.assertEqual({h["mechanism"] for h in self.status_json()["holders"]}, {"flock"})
        self.assertEqual(p.release(), 0)
        self.assertTrue(flock_try(self.lock))

    def test_verbose_when_free(self):
        for args, env, out in (
                (["--verbose", self.lock, "true"], None, took_and_executing("flock", "true")),
                (["--verbose", self.lock, "echo", "hi"], None,
                 "hi\n" + took_and_executing("flock", "echo")),
                (["--verbose", "-s", self.lock, "-c", "echo hi"], self.no_shell,
                 "hi\n" + took_and_executing("flock", "/bin/sh")),
                (["--verbose", "-F", self.lock, "echo", "hi"], None, "hi\n"),
                (["--verbose", "-o", self.lock, "sh", "-c", "exit 3"], None,
                 took_and_executing("flock", "sh"))):
            code = 3 if "exit 3" in args else 0
            self.assertEqual(self.assert_same(args, env), (code, out, ""), args)

    def test_verbose_conflict(self):
        self.hold(flock=True)
        for args, code in ((["--verbose", "-n"], 1), (["--verbose", "-w", "0"], 1),
                           (["--nonblock", "--verbose", "-E", "7"], 7), (["-n"], 1),
                           (["-w", "0.2"], 1)):
            expected = self.assert_same(args + [self.lock, "true"])
            message = "flock: failed to get lock\n" if "--verbose" in args else ""
            self.assertEqual(expected, (code, "", message), args)
        # A wait that times out: flock(1)'s line, after one that says whom it waited for.
        args = ["--verbose", "-w", "0.2", "-E", "9", self.lock, "true"]
        expected = self.call(FLOCK, args)
        self.assertEqual(expected, (9, "", "flock: timeout while waiting to get lock\n"))
        code, out, err = self.call(self.link, args)
        waiting, rest = err.split("\n", 1)
        self.assertEqual((code, out, rest), expected)
        self.assertTrue(waiting.startswith("flock: waiting for the exclusive lock on '%s'"
                                           % self.lock), waiting)

    def test_verbose_waits(self):
        holder, _ = self.hold(flock=True)
        waiters = [self.start([tool, "--verbose", self.lock, "echo", "got it"])
                   for tool in (FLOCK, self.link)]
        waiters[1].expect("waiting for the exclusive lock", "err")
        holder.release()
        for waiter in waiters:
            self.assertEqual(waiter.wait(), 0)
            waiter.expect("executing")
            self.assertEqual(without_timings("".join(waiter.seen["out"])),
                             "got it\n" + took_and_executing("flock", "echo"))

    def test_descriptor_form(self):
        script = ('exec 9<>"$1"; "$0" --verbose -n 9 && "$0" --verbose -u 9 && '
                  '"$0" --verbose -s 9; echo $?')
        results = [self.call("sh", ["-c", script, tool, self.lock]) for tool in (FLOCK, self.link)]
        self.assertEqual(results[1], results[0])
        self.assertEqual(results[0], (0, "flock: getting lock took <n> seconds\n" * 3 + "0\n", ""))

    def test_unlock_scenario(self):
        # Against flock(1) first: the port holds as util-linux's test does.
        for tool in (FLOCK, self.link):
            output, errlog = os.path.join(self.dir, "output"), os.path.join(self.dir, "errlog")
            for path in (output, errlog, self.lock):
                open(path, "w").close()
            result = subprocess.run(["bash", "-c", UNLOCK_TS, "unlock", tool, self.lock, output,
                                     errlog], capture_output=True, text=True, timeout=WAIT)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(output) as out, open(errlog) as err:
                self.assertEqual((out.read(), err.read()), (UNLOCK_EXPECTED, ""), tool)

    def test_usage_errors(self):
        # The exit status of flock(1) (64, EX_USAGE); the message is fasteners', named flock.
        for args in ([], ["--bogus", self.lock, "true"], ["-w", "x", self.lock, "true"],
                     ["-E", "300", self.lock, "true"], ["-F", "-o", self.lock, "true"],
                     ["--n", self.lock, "true"], [self.lock, "-c", "true", "extra"],
                     ["-w"], ["x"], ["--postgres", "", "name", "true"]):
            code, _, flock_err = self.call(FLOCK, args)
            self.assertEqual(code, 64, (args, flock_err))
            code, out, err = self.call(self.link, args)
            self.assertEqual((code, out), (64, ""), (args, err))
            self.assertEqual(err.count("\n"), 1, err)
            self.assertTrue(err.startswith("flock: "), err)
            self.assertIn("'flock --help'", err)
            self.assertNotIn("fasteners run [OPTIONS]", err)  # The grammar is flock's.
        self.assertFalse(os.path.exists(self.lock))

    def test_other_errors(self):
        missing = os.path.join(self.dir, "no", "lock")
        for args, code in (([missing, "true"], 66), (["-n", "9"], 65),
                           ([self.lock, os.path.join(self.dir, "missing")], 69)):
            self.assertEqual(self.call(FLOCK, args)[0], code, args)
            result = self.call(self.link, args)
            self.assertEqual(result[0], code, result)
            self.assertTrue(result[2].startswith("flock: "), result)

    def test_help_and_version(self):
        for option in ("--help", "-h", "--he"):
            self.assertEqual(self.call(FLOCK, [option])[0], 0)
            code, out, err = self.call(self.link, [option])
            self.assertEqual((code, err), (0, ""), option)
            self.assertIn("Usage:\n flock [options] <file>|<directory> <command>", out)
            for word in ("--shared", "--nonblock", "--timeout", "--conflict-exit-code", "--close",
                         "--no-fork", "--verbose", "--command", "--unlock", "fasteners"):
                self.assertIn(word, out)
        for option in ("--version", "-V", "--vers"):
            self.assertTrue(self.call(FLOCK, [option])[1].startswith("flock from util-linux "))
            self.assertEqual(self.call(self.link, [option]),
                             (0, "flock from fasteners %s\n" % VERSION, ""), option)


class python_interop(CliTest):
    """The default mechanism and python-fasteners exclude each other, both ways."""

    def test_python_holds(self):
        for kind in ("lock", "write"):
            p = self.python_hold(kind)
            self.assert_conflict(self.lock)
            self.assert_conflict("-s", self.lock)
            self.assert_free("--flock", self.lock)  # Another mechanism: no conflict.
            self.assertEqual(p.release(), 0)
            self.assert_free(self.lock)

    def test_python_reads(self):
        p = self.python_hold("read")
        self.assert_free("-s", self.lock)
        self.assert_conflict(self.lock)
        p.release()

    def test_fasteners_holds(self):
        p, _ = self.hold()
        for kind in ("lock", "read", "write"):
            self.assertFalse(python_try(kind, self.lock), kind)
        p.release()
        for kind in ("lock", "read", "write"):
            self.assertTrue(python_try(kind, self.lock), kind)

    def test_fasteners_reads(self):
        p, _ = self.hold("-s")
        self.assertTrue(python_try("read", self.lock))
        self.assertFalse(python_try("write", self.lock))
        self.assertFalse(python_try("lock", self.lock))
        p.release()

    def test_fasteners_waits_for_python(self):
        p = self.python_hold("lock")
        waiter = self.start([FASTENERS, "run", "-v", self.lock, "echo", "got it"])
        line = waiter.expect("waiting", "err")
        self.assertIn("pid %d" % p.pid, line)  # Says whom it waits for.
        self.assertIn("python", line)
        p.release()
        self.assertEqual(waiter.wait(), 0)
        waiter.expect("got it")

    def test_python_waits_for_fasteners(self):
        p, _ = self.hold()
        waiter = self.start([PYTHON, "-c", PY_LOCK, "wait", "lock", self.lock, "60"])
        waiter.expect("waiting")
        time.sleep(0.3)
        self.assertTrue(waiter.running())
        p.release()
        self.assertEqual(waiter.wait(), 0)

    def test_python_times_out_against_fasteners(self):
        self.hold("-s")
        waiter = self.start([PYTHON, "-c", PY_LOCK, "wait", "write", self.lock, "0.5"])
        self.assertEqual(waiter.wait(), 1)


class postgres(CliTest):
    """`fasteners run --postgres` and `fasteners status --postgres`: advisory locks on the server
    of the fixture postgres_server (tests/postgres/), against psql sessions and each other."""

    @classmethod
    def setUpClass(cls):
        if not postgres_built():
            raise unittest.SkipTest("this fasteners was built without --postgres")
        if POSTGRES_CONNINFO is None:
            raise unittest.SkipTest("no PostgreSQL server: give --conninfo, or --postgres-state "
                                    "(or FASTENERS_TEST_POSTGRES_STATE) naming the directory of "
                                    "scripts/postgres-server.sh")

    def setUp(self):
        super().setUp()
        self.conninfo = POSTGRES_CONNINFO
        # Every test has names of its own: the server is shared with tests running beside these.
        self.name = "cli-%s-%d-%d" % (self.id().rsplit(".", 1)[-1], os.getpid(), time.time_ns())

    def pg(self, *args, name=None, conninfo=None):
        """`fasteners run|status --postgres CONNINFO ARGS... NAME`-style argument list."""
        return ["--postgres", self.conninfo if conninfo is None else conninfo, *args]

    def pg_hold(self, *options, name=None):
        """Starts `fasteners run --postgres ... NAME` holding the lock; returns (process, command
        pid)."""
        p = self.start([FASTENERS, "run", *self.pg(*options), name or self.name, "sh", "-c",
                        HOLD])
        child = p.locked_pid()
        self.stray_pids.append(child)
        return p, child

    def psql_hold(self, shared=False, name=None):
        """A psql session that holds the name's key (by the SQL form of postgres_key) until its
        stdin closes."""
        p = self.start([PSQL, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", self.conninfo])
        function = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
        p.proc.stdin.write(("SELECT %s(%s);\n\\echo locked %d\n" % (
            function, sql_key(name or self.name), p.pid)).encode())
        p.proc.stdin.flush()
        p.locked_pid()
        return p

    def psql_try(self, shared=False, name=None):
        """Whether a psql session gets the name's key at once (and lets it go)."""
        function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        result = subprocess.run([PSQL, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                                 self.conninfo, "-c",
                                 "SELECT %s(%s)" % (function, sql_key(name or self.name))],
                                capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip() == "t"

    def assert_pg_conflict(self, *options, code=1):
        marker = os.path.join(self.dir, "ran")
        result = run("run", *self.pg("-n", *options), self.name, "touch", marker)
        self.assertEqual(result.returncode, code, result.stderr)
        self.assertFalse(os.path.exists(marker), "the command ran without the lock")

    def assert_pg_free(self, *options):
        result = run("run", *self.pg("-n", *options), self.name, "echo", "ran")
        self.assertEqual((result.returncode, result.stdout), (0, "ran\n"), result.stderr)

    def pg_status_json(self, name=None):
        result = run("status", *self.pg("--json"), name or self.name)
        self.assertIn(result.returncode, (0, 1), result.stderr)
        doc = json.loads(result.stdout)
        self.assertEqual(result.returncode, 0 if doc["state"] == "free" else 1)
        return doc

    def wait_until_free(self):
        wait_until(lambda: run("run", *self.pg("-n"), self.name, "true").returncode == 0,
                   "the lock is free")

    # run --postgres

    def test_fence_tokens_increase(self):
        def token(*options):
            result = run("run", *self.pg("--fence", *options), self.name, "sh", "-c",
                         'echo "${FASTENERS_FENCE-unset}"')
            self.assertEqual(result.returncode, 0, result.stderr)
            return int(result.stdout)
        self.assertEqual(token("-s"), 0)  # No exclusive lock taken on the name yet.
        tokens = [token() for _ in range(3)] + [token("-o")]
        self.assertGreater(tokens[0], 0)
        self.assertEqual(tokens, sorted(set(tokens)), "tokens do not strictly increase")
        self.assertEqual(token("-s"), tokens[-1])
        result = run("run", *self.pg(), self.name, "sh", "-c", 'echo "${FASTENERS_FENCE-unset}"')
        self.assertEqual((result.returncode, result.stdout), (0, "unset\n"), result.stderr)
        result = run("run", *self.pg("--fence", "--slots", "2"), self.name, "true")
        self.assertEqual(result.returncode, 64, result.stderr)
        self.assertIn("--fence cannot be used with --slots", result.stderr)

    def test_exit_status(self):
        for code in (0, 1, 42, 255):
            result = run("run", *self.pg(), self.name, "sh", "-c", "exit %d" % code)
            self.assertEqual(result.returncode, code, result.stderr)
        result = run("run", *self.pg(), self.name, "echo", "a b", "c")
        self.assertEqual((result.returncode, result.stdout), (0, "a b c\n"), result.stderr)
        self.assertEqual(result.stderr, "")
        result = run("run", *self.pg(), self.name, "sh", "-c", "kill -%d $$" % signal.SIGTERM)
        self.assertEqual(result.returncode, 128 + signal.SIGTERM, result.stderr)
        result = run("run", *self.pg(), self.name, "-c", 'echo "$0"; exit 3',
                     env={k: v for k, v in os.environ.items() if k != "SHELL"})
        self.assertEqual((result.returncode, result.stdout), (3, "/bin/sh\n"), result.stderr)
        # The command's own status is not the conflict code.
        result = run("run", *self.pg("-n", "-E", "7"), self.name, "sh", "-c", "exit 1")
        self.assertEqual(result.returncode, 1, result.stderr)

    def test_command_runs_under_the_lock(self):
        # While the command runs, psql cannot take the name's key: the SQL form of postgres_key.
        script = ('"$0" -X -A -t -q "$1" -c "SELECT pg_try_advisory_lock($2), '
                  'pg_try_advisory_lock_shared($2)"')
        result = run("run", *self.pg(), self.name, "sh", "-c", script, PSQL, self.conninfo,
                     sql_key(self.name))
        self.assertEqual((result.returncode, result.stdout), (0, "f|f\n"), result.stderr)
        result = run("run", *self.pg("-s"), self.name, "sh", "-c", script, PSQL, self.conninfo,
                     sql_key(self.name))
        self.assertEqual((result.returncode, result.stdout), (0, "f|t\n"), result.stderr)
        # And once it ended, the lock is free.
        self.assertTrue(self.psql_try())
        self.assertTrue(self.psql_try(shared=True))

    def test_nonblock_conflict_with_psql(self):
        for shared_holder in (False, True):
            holder = self.psql_hold(shared=shared_holder)
            for option in ("-n", "--nb", "--nonblock"):
                marker = os.path.join(self.dir, "ran")
                result, took = run_timed("run", *self.pg(option), self.name, "touch", marker)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertEqual(result.stderr, "")  # Quiet unless --verbose.
                self.assertFalse(os.path.exists(marker))
                self.assertLess(took, WAIT / 3)
            self.assert_pg_conflict("-E", "7", code=7)
            self.assert_pg_conflict("--conflict-exit-code=9", code=9)
            self.assert_pg_conflict("-E", "0", code=0)
            self.assert_pg_conflict("-E", "255", "-E", "3", code=3)
            if shared_holder:
                self.assert_pg_free("-s")
            else:
                self.assert_pg_conflict("-s")
            self.assertEqual(holder.release(), 0)
            self.assert_pg_free()

    def test_nonblock_conflict_with_fasteners(self):
        p, _ = self.pg_hold()
        self.assert_pg_conflict()
        self.assert_pg_conflict("-s")
        self.assert_pg_conflict("-E", "75", code=75)
        result = run("run", *self.pg("-w", "0"), self.name, "true")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertFalse(self.psql_try())
        self.assertFalse(self.psql_try(shared=True))
        # Another name, or the same name in a file, is another lock.
        self.assert_free(self.lock)
        result = run("run", *self.pg("-n"), self.name + "-other", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(p.release(), 0)
        self.assertTrue(self.psql_try())

    def test_timeout_never_early(self):
        self.pg_hold()
        for args in (["-w", "0.5"], ["--timeout", "0.5"], ["--wait=0.5"]):
            marker = os.path.join(self.dir, "ran")
            result, took = run_timed("run", *self.pg(*args), self.name, "touch", marker)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertFalse(os.path.exists(marker))
            self.assertGreaterEqual(took, 0.5)
            self.assertLess(took, WAIT / 3)
        result, took = run_timed("run", *self.pg("-w", "1", "-E", "5"), self.name, "true")
        self.assertEqual(result.returncode, 5, result.stderr)
        self.assertGreaterEqual(took, 1.0)

    def test_timeout_met(self):
        holder = self.psql_hold()
        waiter = self.start([FASTENERS, "run", *self.pg("-v", "-w", "60"), self.name, "echo",
                             "got it"])
        waiter.expect("waiting", "err")
        time.sleep(0.3)
        self.assertTrue(waiter.running())
        self.assertEqual(holder.release(), 0)
        self.assertEqual(waiter.wait(), 0)
        waiter.expect("got it")

    def test_waits_as_long_as_needed(self):
        holder, _ = self.pg_hold()
        waiter = self.start([FASTENERS, "run", *self.pg("-v"), self.name, "sh", "-c", "exit 4"])
        line = waiter.expect("waiting for the exclusive PostgreSQL lock", "err")
        self.assertIn(self.name, line)
        time.sleep(0.3)
        self.assertTrue(waiter.running())
        self.assertEqual(holder.release(), 0)
        self.assertEqual(waiter.wait(), 4)
        waiter.expect("executing")
        self.assertEqual(without_timings("".join(waiter.seen["out"])),
                         took_and_executing("fasteners", "sh"))

    def test_shared(self):
        for option in ("-s", "--shared"):
            p1, _ = self.pg_hold(option)
            p2, _ = self.pg_hold(option)  # A second reader gets in at once.
            self.assert_pg_free("-s")
            self.assertTrue(self.psql_try(shared=True))
            self.assert_pg_conflict()
            self.assert_pg_conflict("-s", "-x")  # The last of -s and -x wins.
            self.assertFalse(self.psql_try())
            doc = self.pg_status_json()
            self.assertEqual(doc["state"], "shared")
            self.assertEqual(sorted(h["pid"] for h in doc["holders"]), sorted([p1.pid, p2.pid]))
            self.assertEqual({h["kind"] for h in doc["holders"]}, {"shared"})
            self.assertEqual((p1.release(), p2.release()), (0, 0))
            self.assert_pg_free()
        # With a psql reader.
        holder = self.psql_hold(shared=True)
        p, _ = self.pg_hold("-s")
        self.assert_pg_conflict()
        self.assertEqual((p.release(), holder.release()), (0, 0))

    def test_verbose(self):
        # flock(1)'s lines, as for files: nothing more when it did not wait.
        holder, _ = self.pg_hold()
        for options in (["-n"], ["-w", "0"]):
            result = run("run", *self.pg("-v", *options), self.name, "true")
            self.assertEqual((result.returncode, result.stdout, result.stderr),
                             (1, "", "fasteners: failed to get lock\n"))
        # When it waits, it names the sessions it waits for.
        result = run("run", *self.pg("-v", "-w", "0.2"), self.name, "true")
        self.assertEqual((result.returncode, result.stdout), (1, ""), result.stderr)
        waiting, timed_out = result.stderr.splitlines()
        self.assertTrue(waiting.startswith(
            "fasteners: waiting for the exclusive PostgreSQL lock '%s' (at most 0.2 seconds): "
            "held exclusive by pid %d" % (self.name, holder.pid)), waiting)
        self.assertEqual(timed_out, "fasteners: timeout while waiting to get lock")
        holder.release()
        psql = self.psql_hold(shared=True)
        result = run("run", *self.pg("-v", "-w", "0.2"), self.name, "true")
        self.assertEqual(result.returncode, 1)
        self.assertIn("psql", result.stderr)  # A session of another kind: its application_name.
        psql.release()
        result = run("run", *self.pg("-v"), self.name, "-c", "echo ran",
                     env={k: v for k, v in os.environ.items() if k != "SHELL"})
        self.assertEqual((result.returncode, without_timings(result.stdout), result.stderr),
                         (0, "ran\n" + took_and_executing("fasteners", "/bin/sh"), ""))
        self.assertEqual(run("run", *self.pg(), self.name, "true").stderr, "")  # Quiet.

    def test_lock_ends_when_fasteners_is_killed(self):
        # The session belongs to the fasteners process: killed, it frees the lock at once, though
        # the command runs on.
        p, child = self.pg_hold()
        self.assert_pg_conflict()
        p.proc.kill()
        self.assertEqual(p.wait(), -signal.SIGKILL)
        self.assertTrue(alive(child))
        self.wait_until_free()
        self.assertTrue(self.psql_try())
        self.assertEqual(self.pg_status_json()["state"], "free")

    def test_interrupt_waits_for_the_command(self):
        # SIGINT and SIGQUIT (Ctrl+C, Ctrl+\ reach the command too) do not end fasteners, and so
        # the lock, while the command runs; SIGTERM does.
        p, child = self.pg_hold()
        for sig in (signal.SIGINT, signal.SIGQUIT):
            os.kill(p.pid, sig)
        time.sleep(0.3)
        self.assertTrue(p.running())
        self.assert_pg_conflict()
        self.assertEqual(p.release(), 0)
        self.assert_pg_free()
        p, child = self.pg_hold()
        p.proc.terminate()
        self.assertEqual(p.wait(), -signal.SIGTERM)
        self.wait_until_free()
        # The command itself gets them at their default action: SIGINT ends it.
        p, child = self.pg_hold()
        os.kill(child, signal.SIGINT)
        self.assertEqual(p.wait(), 128 + signal.SIGINT)
        self.assert_pg_free()

    def test_session_lost_while_the_command_runs(self):
        # The server ends the session (and so the lock) under the command: a warning, and the
        # command's status all the same.
        p, _ = self.pg_hold()
        backend = self.pg_status_json()["holders"][0]["backend_pid"]
        result = subprocess.run([PSQL, "-X", "-A", "-t", "-q", self.conninfo, "-c",
                                 "SELECT pg_terminate_backend(%d)" % backend],
                                capture_output=True, text=True, timeout=WAIT)
        self.assertEqual((result.returncode, result.stdout), (0, "t\n"), result.stderr)
        self.wait_until_free()
        self.assertEqual(p.release(), 0)
        line = p.expect("warning", "err")
        self.assertIn("lost while the command ran", line)

    def terminate_holder(self):
        backend = self.pg_status_json()["holders"][0]["backend_pid"]
        result = subprocess.run([PSQL, "-X", "-A", "-t", "-q", self.conninfo, "-c",
                                 "SELECT pg_terminate_backend(%d)" % backend],
                                capture_output=True, text=True, timeout=WAIT)
        self.assertEqual((result.returncode, result.stdout), (0, "t\n"), result.stderr)

    def test_on_loss_term_ends_the_command_at_once(self):
        # The lock is lost while the command runs: SIGTERM reaches it at once (its stdin stays
        # open, so it would run on otherwise), and its status is the exit status.
        p, _ = self.pg_hold("--on-loss=term")
        start = time.monotonic()
        self.terminate_holder()
        self.assertEqual(p.wait(), 128 + signal.SIGTERM)
        self.assertLess(time.monotonic() - start, 2.0)
        line = p.expect("warning", "err")
        self.assertIn("lost while the command ran", line)

    def test_on_loss_warn_lets_the_command_run(self):
        p, _ = self.pg_hold("--on-loss", "warn")
        self.terminate_holder()
        self.wait_until_free()
        time.sleep(0.5)
        self.assertTrue(p.running())
        self.assertEqual(p.release(), 0)
        self.assertIn("lost while the command ran", p.expect("warning", "err"))

    def test_on_loss_term_without_a_loss_changes_nothing(self):
        p, _ = self.pg_hold("--on-loss=term")
        self.assertEqual(p.release(), 0)
        self.assert_pg_free()

    def test_on_loss_usage(self):
        result = run("run", *self.pg("--on-loss=kill"), self.name, "true")
        self.assert_one_line_error(result, 64, "--on-loss")
        result = run("run", "--on-loss=term", os.path.join(self.dir, "lock"), "true")
        self.assert_one_line_error(result, 64, "--on-loss")
        result = run("run", "--slots", "2", *self.pg("--on-loss=term"), self.name, "true")
        self.assert_one_line_error(result, 64, "--on-loss")

    def test_command_cannot_be_executed(self):
        result = run("run", *self.pg(), self.name, os.path.join(self.dir, "no-such-program"))
        self.assert_one_line_error(result, 69, "no-such-program")
        self.assert_pg_free()

    # status --postgres

    def test_status_of_a_free_name(self):
        result = run("status", *self.pg(), self.name)
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (0, self.name + ": free\n", ""))
        doc = self.pg_status_json()
        self.assertEqual(doc, {"name": self.name, "key": postgres_key(self.name),
                               "database": doc["database"], "state": "free", "holders": []})
        self.assertTrue(doc["database"])

    def check_fasteners_row(self, h, pid, kind, waiting):
        self.assertEqual(h["pid"], pid)
        self.assertEqual(h["kind"], kind)
        self.assertIs(h["waiting"], waiting)
        self.assertEqual(h["mechanism"], "postgres")
        host = socket.gethostname()
        self.assertTrue(host.startswith(h["host"]) and h["host"], (h, host))
        self.assertTrue(h["application_name"].startswith("fasteners %d@" % pid), h)
        self.assertIn("fasteners", h["program"])
        self.assertIsInstance(h["backend_pid"], int)
        self.assertNotEqual(h["backend_pid"], pid)
        self.assertEqual(h["client"], "local")  # A Unix-domain socket.
        self.assertRegex(h["since"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

    def test_status_holder_and_waiter(self):
        holder, _ = self.pg_hold()
        waiter = self.start([FASTENERS, "run", *self.pg("-v"), self.name, "true"])
        waiter.expect("waiting", "err")
        wait_until(lambda: any(h["waiting"] for h in self.pg_status_json()["holders"]),
                   "the waiter shows in pg_locks")
        doc = self.pg_status_json()
        self.assertEqual((doc["name"], doc["key"], doc["state"]),
                         (self.name, postgres_key(self.name), "exclusive"))
        self.assertEqual(len(doc["holders"]), 2, doc)
        first, second = doc["holders"]  # Holders first, then waiters.
        self.check_fasteners_row(first, holder.pid, "exclusive", False)
        self.check_fasteners_row(second, waiter.pid, "exclusive", True)
        self.assertNotEqual(first["backend_pid"], second["backend_pid"])
        result = run("status", *self.pg(), self.name)
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], self.name + ": held exclusive")
        self.assertEqual(lines[1].split(),
                         ["PID", "HOST", "LOCK", "SESSION", "CLIENT", "APPLICATION"])
        self.assertEqual(len(lines), 4, result.stdout)
        holder_row, waiter_row = lines[2].split(), lines[3].split()
        self.assertEqual(holder_row[0], str(holder.pid))
        self.assertEqual(holder_row[2:5], ["exclusive", str(first["backend_pid"]), "local"])
        self.assertIn("[since ", lines[2])
        self.assertEqual(waiter_row[0], str(waiter.pid))
        self.assertEqual(waiter_row[2:6],
                         ["exclusive", "(waiting)", str(second["backend_pid"]), "local"])
        holder.release()
        self.assertEqual(waiter.wait(), 0)
        self.assertEqual(self.pg_status_json()["state"], "free")

    def test_status_of_psql_and_shared_holders(self):
        psql = self.psql_hold(shared=True)
        p, _ = self.pg_hold("-s")
        doc = self.pg_status_json()
        self.assertEqual(doc["state"], "shared")
        rows = {h["application_name"].split()[0] if h["application_name"] else "": h
                for h in doc["holders"]}
        self.assertEqual(set(rows), {"psql", "fasteners"}, doc)
        self.check_fasteners_row(rows["fasteners"], p.pid, "shared", False)
        other = rows["psql"]
        self.assertEqual((other["pid"], other["host"], other["program"]), (None, None, None))
        self.assertEqual((other["kind"], other["waiting"], other["client"]),
                         ("shared", False, "local"))
        result = run("status", *self.pg(), self.name)
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stdout.startswith(self.name + ": held shared\n"), result.stdout)
        psql_line = [line for line in result.stdout.splitlines()[2:] if "psql" in line]
        self.assertEqual(len(psql_line), 1, result.stdout)
        self.assertEqual(psql_line[0].split()[:3], ["?", "?", "shared"])
        psql.release()
        p.release()

    def test_status_does_not_take_the_lock(self):
        holder = self.psql_hold()
        for _ in range(3):
            self.assertEqual(run("status", *self.pg(), self.name).returncode, 1)
        holder.release()
        self.assertEqual(run("status", *self.pg(), self.name).returncode, 0)
        self.assertTrue(self.psql_try())

    # run --slots N --postgres, and status on a semaphore's name

    def pg_hold_slot(self, slots, name=None):
        """Starts `fasteners run --slots SLOTS --postgres ... NAME` holding a slot; returns the
        process."""
        return self.pg_hold("--slots", str(slots), name=name)[0]

    def pg_semaphore_status(self):
        """`fasteners status --json --postgres ... NAME`: (exit status, document)."""
        result = run("status", *self.pg("--json"), self.name)
        self.assertIn(result.returncode, (0, 1), result.stderr)
        return result.returncode, json.loads(result.stdout)

    def test_semaphore_at_most_n_commands_at_once(self):
        slots = 3
        self.assert_at_most_n_at_once(
            slots, [FASTENERS, "run", "--slots", str(slots), *self.pg(), self.name])
        self.assertTrue(self.psql_try())  # A semaphore is not the lock of its name.

    def test_semaphore_nonblocking_fails_when_all_slots_are_taken(self):
        first = self.pg_hold_slot(2)
        self.assert_pg_free("--slots", "2")  # One slot is still free.
        self.pg_hold_slot(2)
        self.assert_pg_conflict("--slots", "2")
        self.assert_pg_conflict("-E", "75", "--slots", "2", code=75)
        result = run("run", "-v", *self.pg("-n", "--slots", "2"), self.name, "true")
        self.assertEqual((result.returncode, result.stderr),
                         (1, "fasteners: failed to get a slot\n"))
        # -v names the holders of the slots it waits for.
        result = run("run", "-v", *self.pg("-w", "0.3", "--slots", "2"), self.name, "true")
        self.assertEqual(result.returncode, 1, result.stderr)
        waiting = result.stderr.splitlines()[0]
        self.assertTrue(waiting.startswith(
            "fasteners: waiting for a slot of the PostgreSQL semaphore '%s' (2 slots) (at most "
            "0.3 seconds): held by " % self.name), waiting)
        self.assertIn("pid %d" % first.pid, waiting)
        self.assertRegex(waiting, r"in slot [01]\b")
        self.assertEqual(first.release(), 0)
        self.assert_pg_free("--slots", "2")

    def test_semaphore_slot_held_by_psql(self):
        # A psql session that holds the key of "NAME:semaphore slot 0" holds that slot.
        psql = self.psql_hold(name=self.name + ":semaphore slot 0")
        self.assert_pg_conflict("--slots", "1")
        self.assert_pg_free("--slots", "2")
        psql.release()
        self.assert_pg_free("--slots", "1")

    def test_semaphore_mismatched_slots_names_both_numbers(self):
        holder = self.pg_hold_slot(2)
        for args in (["--slots", "3"], ["-n", "--slots", "3"], ["-v", "-w", "1", "--slots", "1"]):
            result = run("run", *self.pg(*args), self.name, "true")
            self.assert_one_line_error(result, 64, "has 2 slots", "not %s" % args[-1],
                                       "'%s'" % self.name, "--slots")
        self.assert_pg_free("--slots", "2")
        self.assertEqual(holder.release(), 0)
        # Once nobody uses it, N is not recorded anywhere: another N may start afresh.
        self.assert_pg_free("--slots", "3")

    def test_semaphore_usage(self):
        for args, words in (
                (["--slots", "0"], ["slots"]),
                (["--slots", "65"], ["1 to 64", "65"]),
                (["--slots", "99999999999999999999999"], ["1 to 64"]),
                (["--slots", "2", "-s"], ["-s", "--slots"]),
                (["--slots", "2", "-F"], ["-F", "--slots"]),
                (["--slots", "2", "--flock"], ["--flock"])):
            result = run("run", *self.pg(*args), self.name, "true")
            self.assert_one_line_error(result, 64, *words)
        result = run("run", *self.pg("--slots", "2"), self.name)
        self.assert_one_line_error(result, 64, "no command given", "--postgres")
        result = run("run", *self.pg("--slots", "2"), "", "true")
        self.assert_one_line_error(result, 64, "empty")

    def test_semaphore_unreachable_server(self):
        nowhere = os.path.join(self.dir, "no-server")
        secret = "Sekr1t-pw-%d" % os.getpid()
        conninfo = "host=%s port=1 password=%s connect_timeout=5" % (nowhere, secret)
        for args in (["-n"], ["-v", "-w", "1"]):
            result = run("run", *self.pg(*args, "--slots", "2", conninfo=conninfo), self.name,
                         "true")
            self.assert_one_line_error(result, 69, nowhere)
            self.assertNotIn(secret, result.stderr)

    def test_status_of_a_semaphore(self):
        holders = [self.pg_hold_slot(3) for _ in range(2)]
        result = run("status", *self.pg(), self.name)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "%s: semaphore: 2 of 3 slots held" % self.name)
        self.assertEqual(lines[1].split(),
                         ["PID", "HOST", "LOCK", "SESSION", "CLIENT", "APPLICATION"])
        self.assertEqual(len(lines), 4, result.stdout)
        for p in holders:
            self.assertTrue(any(l.split()[0] == str(p.pid) and re.search(r"slot [0-2]\b", l)
                                for l in lines[2:]), result.stdout)
        code, doc = self.pg_semaphore_status()
        self.assertEqual(code, 0)
        self.assertEqual((doc["name"], doc["state"], doc["semaphore"]),
                         (self.name, "held", {"slots": 3, "held": 2}))
        self.assertTrue(doc["database"])
        self.assertEqual(sorted(h["pid"] for h in doc["holders"]),
                         sorted(p.pid for p in holders))
        self.assertEqual(len({h["slot"] for h in doc["holders"]}), 2)
        for h in doc["holders"]:
            self.assertIn(h["slot"], range(3))
            self.assertEqual(h["key"], postgres_key("%s:semaphore slot %d" % (self.name,
                                                                              h["slot"])))
            self.check_fasteners_row(h, h["pid"], "exclusive", False)
        self.assertEqual(doc["waiting"], [])

        holders.append(self.pg_hold_slot(3))
        waiter, doc = self.start_first_waiter(
            [FASTENERS, "run", "-v", *self.pg("--slots", "3"), self.name, "true"],
            self.pg_semaphore_status, 3, holders)
        first = doc["waiting"][0]
        self.check_fasteners_row(first, waiter.pid, "exclusive", True)
        self.assertEqual(first["key"], postgres_key(self.name + ":semaphore turnstile"))
        result = run("status", *self.pg(), self.name)
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "%s: semaphore: 3 of 3 slots held" % self.name)
        self.assertEqual(len(lines), 6, result.stdout)
        self.assertEqual(lines[5].split()[0], str(waiter.pid), result.stdout)
        self.assertIn(" waiting (first in line) ", lines[5])
        self.assertEqual(holders[0].release(), 0)
        self.assertEqual(waiter.wait(), 0)
        code, doc = self.pg_semaphore_status()
        self.assertEqual((code, doc["state"], doc["semaphore"]["held"], doc["waiting"]),
                         (0, "held", 2, []))
        for p in holders[1:]:
            self.assertEqual(p.release(), 0)
        # Nobody uses it any more, so nothing tells it is a semaphore: the name's lock is free.
        result = run("status", *self.pg(), self.name)
        self.assertEqual((result.returncode, result.stdout), (0, self.name + ": free\n"))

    def test_status_of_a_semaphore_and_a_lock_of_one_name(self):
        # The name's own lock is another key: while the semaphore is in use, status tells of it.
        lock = self.psql_hold()
        slot = self.pg_hold_slot(1)
        code, doc = self.pg_semaphore_status()
        self.assertEqual((code, doc["state"], doc["semaphore"]),
                         (1, "full", {"slots": 1, "held": 1}))
        self.assertEqual([h["pid"] for h in doc["holders"]], [slot.pid])
        self.assertEqual(slot.release(), 0)
        self.assertEqual(self.pg_status_json()["state"], "exclusive")
        lock.release()

    # Errors

    def test_unreachable_server(self):
        nowhere = os.path.join(self.dir, "no-server")
        conninfo = "host=%s port=1 dbname=fasteners connect_timeout=5" % nowhere
        marker = os.path.join(self.dir, "ran")
        for args in (["-n"], [], ["-w", "5"], ["-s", "-v"]):
            result, took = run_timed("run", *self.pg(*args, conninfo=conninfo), self.name,
                                     "touch", marker)
            self.assert_one_line_error(result, 69, nowhere)
            self.assertFalse(os.path.exists(marker))
            self.assertLess(took, WAIT / 3)
        for args in ([], ["--json"]):
            result = run("status", *self.pg(*args, conninfo=conninfo), self.name)
            self.assert_one_line_error(result, 69, nowhere)
            self.assertEqual(result.stdout, "")

    def test_login_refused(self):
        result = run("run", *self.pg(conninfo=self.conninfo + " dbname=no_such_database"),
                     self.name, "true")
        self.assert_one_line_error(result, 69, "no_such_database")
        result = run("status", *self.pg(conninfo=self.conninfo + " dbname=no_such_database"),
                     self.name)
        self.assert_one_line_error(result, 69, "no_such_database")

    def test_password_never_printed(self):
        secret = "Sekr1t-pw-%d" % os.getpid()
        nowhere = os.path.join(self.dir, "no-server")
        conninfos = [
            "host=%s port=1 password=%s" % (nowhere, secret),
            "host=%s port=1 password='%s' sslpassword=%s" % (nowhere, secret, secret),
            "postgresql://someone:%s@/fasteners?host=%s&port=1" % (secret, nowhere),
            "host=%s port=1 password=%s oops" % (nowhere, secret),  # Cannot be parsed.
            "password=%s host=%s port=1 connect_timeout=abc" % (secret, nowhere),
            # The real server (trust ignores the password).
            "%s password=%s" % (self.conninfo, secret),
        ]
        self.psql_hold()
        for conninfo in conninfos:
            for args in (["run", *self.pg("-v", "-n", conninfo=conninfo), self.name, "true"],
                         ["run", *self.pg("-v", "-w", "0.1", conninfo=conninfo), self.name,
                          "true"],
                         ["status", *self.pg(conninfo=conninfo), self.name],
                         ["status", *self.pg("--json", conninfo=conninfo), self.name]):
                result = run(*args)
                self.assertIn(result.returncode, (1, 64, 69), result.stderr)
                self.assertNotIn(secret, result.stdout + result.stderr, args)
                if result.returncode != 1:
                    self.assert_one_line_error(result, result.returncode)

    def test_usage(self):
        for args, words in (
                (["run", *self.pg("--flock"), self.name, "true"], ["--flock", "--postgres"]),
                (["run", "--flock", *self.pg(), self.name, "true"], ["--flock", "--postgres"]),
                (["run", *self.pg(), self.name], ["no command"]),
                (["run", *self.pg()], ["LOCKFILE"]),
                (["run", "--postgres"], []),
                (["run", *self.pg(), "", "true"], ["empty"]),
                (["status", *self.pg(), ""], ["empty"]),
                (["run", *self.pg("-w", "x"), self.name, "true"], ["timeout"]),
                (["run", *self.pg("-E", "256"), self.name, "true"], ["exit code"]),
                (["run", *self.pg(conninfo="host=x bogus"), self.name, "true"], ["bogus"]),
                (["status", *self.pg(conninfo="nokey"), self.name], ["nokey"])):
            marker = os.path.join(self.dir, "ran")
            self.assert_one_line_error(run(*args), 64, *words)
            self.assertFalse(os.path.exists(marker))
        # -o is implied, and so harmless.
        result = run("run", *self.pg("-o"), self.name, "echo", "ok")
        self.assertEqual((result.returncode, result.stdout), (0, "ok\n"), result.stderr)

    def test_help(self):
        result = run("run", "--help")
        self.assertIn("--postgres CONNINFO", result.stdout)
        self.assertIn("ends when fasteners ends", result.stdout)
        self.assertIn("--postgres CONNINFO", run("status", "--help").stdout)
        self.assertNotIn("nor yet", result.stdout)


def postgres_key(name):
    """fasteners::postgres_key: the first 8 bytes of the SHA-256 of the name, big-endian, signed."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def sql_key(name):
    """The key of `name` as the SQL expression of fasteners/postgres.hpp computes it."""
    literal = "'" + name.replace("'", "''") + "'"
    return ("('x' || left(encode(sha256(convert_to(%s, 'UTF8')), 'hex'), 16))::bit(64)::bigint"
            % literal)


GROUPS = {"usage": usage, "run": run_, "fence": fence, "inheritance": inheritance, "status": status,
          "semaphore": semaphore, "flock_interop": flock_interop, "flock_compat": flock_compat,
          "flock_link": flock_link, "python_interop": python_interop,
          "postgres": postgres}


def main():
    global FASTENERS, MECHANISM, VERSION, POSTGRES_CONNINFO, POSTGRES_BUILT, PSQL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasteners", required=True, help="the fasteners binary to test")
    parser.add_argument("--mechanism", default="fcntl_ofd", choices=["fcntl_ofd", "fcntl_posix"],
                        help="the library's lock mechanism (fcntl_posix: classic fcntl build)")
    parser.add_argument("--version", help="the version the binary must print")
    parser.add_argument("--group", choices=sorted(GROUPS), action="append",
                        help="run this group only (repeatable); default: all")
    parser.add_argument("--conninfo", help="the PostgreSQL server of the postgres group (a libpq "
                        "connection string of a trusted superuser)")
    parser.add_argument("--postgres-state",
                        default=os.environ.get("FASTENERS_TEST_POSTGRES_STATE") or None,
                        help="a file naming the directory of scripts/postgres-server.sh, whose "
                        "server the postgres group uses (default: "
                        "$FASTENERS_TEST_POSTGRES_STATE)")
    parser.add_argument("--postgres-built", choices=["yes", "no"],
                        help="whether the binary has --postgres (default: ask it)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.postgres_built:
        POSTGRES_BUILT = args.postgres_built == "yes"
    POSTGRES_CONNINFO = args.conninfo
    if POSTGRES_CONNINFO is None and args.postgres_state:
        try:
            with open(args.postgres_state) as f:
                server_dir = f.read().strip()
            with open(os.path.join(server_dir, "conninfo")) as f:
                POSTGRES_CONNINFO = f.read().strip()
        except OSError as e:
            sys.exit("no PostgreSQL server: %s (the fixture postgres_server writes it)" % e)
        try:
            with open(os.path.join(server_dir, "bindir")) as f:
                bindir_psql = os.path.join(f.read().strip(), "psql")
            if os.access(bindir_psql, os.X_OK):
                PSQL = bindir_psql
        except OSError:
            pass
    FASTENERS = os.path.abspath(args.fasteners)
    MECHANISM = args.mechanism
    VERSION = args.version or run("--version").stdout.split()[-1]
    if importlib.util.find_spec("fasteners") is None:  # The interop groups need it.
        sys.exit("%s cannot import fasteners: install python3-fasteners" % PYTHON)
    if not os.path.exists(FLOCK):
        sys.exit("flock(1) not found: install util-linux")
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(GROUPS[g])
                               for g in (args.group or sorted(GROUPS)))
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
