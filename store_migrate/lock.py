"""The kernel lock that keeps two runs, or a run and a rollback, on the same stores apart.

A run or rollback holds flock(2) on the directory that contains each store (symlinks resolved,
so every path to a store shares one lock). No lock file is ever created: nothing is left behind
in the service's directory, and since the kernel drops the lock when the holder exits or is
killed, there is never a stale lock to clear by hand. A waiting process names the holder's pid,
read from /proc/locks. Stores in one directory share a lock; that only serialises runs that
would touch the same directory anyway.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from .errors import LockTimeout

log = structlog.get_logger("store_migrate")
_POLL = 0.05


def lock_dir_for(store_path: str) -> str:
    """The directory whose lock guards `store_path`: the nearest existing ancestor, resolved."""
    directory = os.path.dirname(os.path.realpath(store_path))
    while not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    return directory


@contextmanager
def locked(store_paths: list[str], timeout: float) -> Iterator[None]:
    """Hold the lock of every store in `store_paths`, taken in sorted order (no deadlock)."""
    held: list[int] = []
    try:
        for directory in sorted({lock_dir_for(p) for p in store_paths}):
            stores = [p for p in store_paths if lock_dir_for(p) == directory]
            held.append(_acquire(directory, stores, timeout))
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)


def _acquire(directory: str, stores: list[str], timeout: float) -> int:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - started >= timeout:
                holder = holder_of(fd)
                os.close(fd)
                raise LockTimeout(directory, ", ".join(stores), holder, timeout) from None
            time.sleep(_POLL)
    log.debug("lock.acquired", directory=directory,
              waited_ms=round((time.monotonic() - started) * 1000, 1))
    return fd


def holder_of(fd: int) -> str:
    """`pid N` of the process holding a flock on the file behind `fd`, from /proc/locks."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return f"pid {fields[4]}"
    except OSError:
        pass
    return "another process"
