"""The kernel lock that keeps two runs, or a run and a rollback, on the same stores apart.

A run or rollback holds flock(2) on the directory that contains each store (symlinks resolved,
so every path to a store shares one lock). No lock file is ever created: nothing is left behind
in the service's directory, and since the kernel drops the lock when the holder exits or is
killed, there is never a stale lock to clear by hand. A waiting process names the holder's pid,
read from /proc/locks, and the program it runs (`lock.waiting`, logged once when the wait starts,
with how long it will wait). Stores in one directory share a lock; that only serialises runs that
would touch the same directory anyway.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from store_migrate.errors import LockTimeout

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
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - started >= timeout:
                holder = holder_of(fd)
                os.close(fd)
                raise LockTimeout(directory, ", ".join(stores), holder, timeout) from None
            if not waited:  # once, when the wait starts: whom it waits for, and how long it will
                pid = _holder_pid(fd)
                log.warning("lock.waiting", directory=directory, stores=stores, holder=_describe(pid),
                            holder_pid=pid, holder_command=None if pid is None else _command_of(pid),
                            timeout_s=timeout)
                waited = True
            time.sleep(_POLL)
    waited_ms = round((time.monotonic() - started) * 1000, 1)
    if waited:
        log.info("lock.acquired", directory=directory, waited_ms=waited_ms)
    else:
        log.debug("lock.acquired", directory=directory, waited_ms=waited_ms)
    return fd


def holder_of(fd: int) -> str:
    """`pid N (command)` of the process holding a flock on the file behind `fd`, from /proc/locks."""
    return _describe(_holder_pid(fd))


def _describe(pid: int | None) -> str:
    if pid is None:
        return "another process"
    command = _command_of(pid)
    return f"pid {pid}" + (f" ({command})" if command else "")


def _holder_pid(fd: int) -> int | None:
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    return None


def _command_of(pid: int) -> str | None:
    """The program a process runs, by name only: never its arguments, which may hold anything.
    For an interpreter running a script (`python3 /…/store-migrate-backfill`), the script's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [os.fsdecode(a) for a in cmdline.read().split(b"\0") if a]
    except OSError:
        return None
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if name.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        name = argv[2]
    elif name.startswith("python") and len(argv) > 1 and not argv[1].startswith("-"):
        name = os.path.basename(argv[1])
    shown = "".join(c if c.isprintable() and c.isascii() else "?" for c in name)[:64]
    return shown or None
