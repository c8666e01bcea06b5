# Takes python-fasteners locks for the interop tests: py_lock.py ACTION KIND PATH [SECONDS].
#
# KIND: lock (fasteners.InterProcessLock), read or write (fasteners.InterProcessReaderWriterLock).
# ACTION try: acquire once without blocking; exit 0 if it was taken (then release), 10 if not.
# ACTION timed: acquire waiting at most SECONDS; exit 0 (then release) or 10.
# ACTION hold: acquire blocking, print "held", release when stdin ends (exit 0).
import sys

import fasteners

ACQUIRED = 0
BUSY = 10


def make_lock(kind, path):
    if kind == "lock":
        lock = fasteners.InterProcessLock(path)
        return lock.acquire, lock.release
    rw = fasteners.InterProcessReaderWriterLock(path)
    if kind == "read":
        return rw.acquire_read_lock, rw.release_read_lock
    if kind == "write":
        return rw.acquire_write_lock, rw.release_write_lock
    raise ValueError("unknown lock kind " + kind)


def main(argv):
    action, kind, path = argv[1:4]
    acquire, release = make_lock(kind, path)
    if action == "try":
        if not acquire(blocking=False):
            return BUSY
        release()
        return ACQUIRED
    if action == "timed":
        if not acquire(timeout=float(argv[4])):
            return BUSY
        release()
        return ACQUIRED
    if action == "hold":
        if not acquire():
            return 2
        print("held", flush=True)
        sys.stdin.read()
        release()
        return ACQUIRED
    raise ValueError("unknown action " + action)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
