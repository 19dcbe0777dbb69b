"""Run per-store work on both cores when the stores are big.

The work for one store (parse, validate, encode) is pure CPU under the GIL, so stores are spread
over forked worker processes, biggest first, at most one per core. A worker inherits the loaded
modules, the logging configuration, the disabled cyclic GC and the run's locks; it sends its
small result back through a pipe and leaves with os._exit, so the hundreds of megabytes of
parsed objects it built are never freed one by one (measured: 0.2-0.4 s per big store). It is
killed with its parent, so a killed run's locks go away with all of its processes.

Small stores are done in this process: a fork costs more than it saves there, and the tests that
inject faults into file operations patch this process only.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import selectors
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from .errors import StoreMigrateError

PARALLEL_BYTES = 16 * 2**20
"""Below this many bytes of stores in all, everything runs in this process."""

_in_worker = False
_kept: list[Any] = []


def in_worker() -> bool:
    """Whether this is a forked worker (where a fatal signal loses nothing: the parent reports
    WorkerFailed and cleans up)."""
    return _in_worker


def outlive(value: Any) -> None:
    """In a worker: keep `value` until the worker leaves with os._exit, so its objects are never
    freed one by one (0.2-0.3 s for a parsed 240 MB store). Elsewhere: nothing."""
    if _in_worker:
        _kept.append(value)

Result = TypeVar("Result")
Item = TypeVar("Item")
_PR_SET_PDEATHSIG = 1


class WorkerFailed(StoreMigrateError):
    """A worker process died or hit an unexpected error (a bug, or the kernel killed it)."""


def forks(sizes: Sequence[int]) -> bool:
    """Whether map_stores runs jobs of these sizes in worker processes (this one is then idle)."""
    return min(len(sizes), os.cpu_count() or 1) >= 2 and sum(sizes) >= PARALLEL_BYTES


def map_stores(
    work: Callable[..., Result],
    jobs: Sequence[tuple[Any, ...]],
    sizes: Sequence[int],
    on_done: Callable[[int], None] | None = None,
) -> list[Result | BaseException]:
    """`work(*job)` for every job, in job order. A refusal or I/O error is returned in its job's
    place so the caller can clean up what the other jobs did before raising it. `on_done(i)` is
    called as each job finishes (for progress)."""
    done = on_done or (lambda _: None)
    cores = min(len(jobs), os.cpu_count() or 1, 2)
    if not forks(sizes):
        outcomes = []
        for index, job in enumerate(jobs):
            outcomes.append(_call(work, job))
            done(index)
        return outcomes
    pending = sorted(range(len(jobs)), key=lambda i: -sizes[i])
    results: dict[int, Result | BaseException] = {}
    running: dict[int, tuple[int, int, bytearray]] = {}  # read fd -> (job index, pid, bytes so far)
    with selectors.DefaultSelector() as selector, _killed_on_error(running):
        while pending or running:
            while pending and len(running) < cores:
                index = pending.pop(0)
                fd, pid = _fork(work, jobs[index])
                running[fd] = (index, pid, bytearray())
                selector.register(fd, selectors.EVENT_READ)
            for key, _ in selector.select():
                fd = int(key.fd)
                index, pid, buffer = running[fd]
                chunk = os.read(fd, 1 << 20)
                if chunk:
                    buffer += chunk
                    continue
                selector.unregister(fd)
                os.close(fd)
                del running[fd]
                results[index] = _outcome(buffer, _reap(pid), jobs[index])
                done(index)
    return [results[i] for i in range(len(jobs))]


@contextmanager
def _killed_on_error(running: dict[int, tuple[int, int, bytearray]]) -> Iterator[None]:
    """When the parent stops early (a signal, an error), its workers stop too, before it cleans
    up after them: none may go on writing a temporary file beside a store."""
    try:
        yield
    except BaseException:
        for fd, (_, pid, _) in running.items():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
        raise


def _fork(work: Callable[..., Any], job: tuple[Any, ...]) -> tuple[int, int]:
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return read_fd, pid
    os.close(read_fd)
    code = 1
    try:
        _die_with(parent)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # not the parent's progress display
        global _in_worker
        _in_worker = True
        try:
            outcome: Any = _call(work, job)
        except Exception:  # noqa: BLE001 -- a bug: reported to the parent, which raises WorkerFailed
            outcome = WorkerFailed(f"worker failed on {job[:2]}:\n{traceback.format_exc()}")
        payload = memoryview(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        while payload:
            payload = payload[os.write(write_fd, payload):]
        code = 0
        os.close(write_fd)  # the parent goes on now, not after the kernel has freed our memory
    finally:
        os._exit(code)


def _reap(pid: int) -> int:
    """The wait status of a worker whose pipe reached end-of-file. A worker that closed its pipe
    itself had sent its whole result and is only exiting: 0 at once, and a thread reaps it
    while the kernel frees its memory (~0.05 s for a gigabyte). One that died closed it by dying."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return status
    threading.Thread(target=os.waitpid, args=(pid, 0), name="store-migrate-reaper", daemon=True).start()
    return 0


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
        os._exit(1)


def _outcome(payload: bytearray, status: int, job: tuple[Any, ...]) -> Any:
    died = WorkerFailed(
        f"the worker process for {job[:2]} died (wait status {status}); nothing was replaced, "
        "rerun (was the store truncated while it was read, or is the machine short of memory?)"
    )
    if os.waitstatus_to_exitcode(status) != 0 or not payload:
        return died
    try:
        return pickle.loads(payload)
    except (pickle.UnpicklingError, EOFError, ValueError):  # cut short: it died while sending
        return died


def _call(work: Callable[..., Result], job: tuple[Any, ...]) -> Result | BaseException:
    try:
        return work(*job)
    except (StoreMigrateError, OSError) as exc:  # raised by the caller after cleaning up
        return exc


def in_threads(work: Callable[[Item], Result], items: Sequence[Item], total_bytes: int) -> list[Result]:
    """`work(item)` for every item, in threads when the files are big (reading, hashing, copying
    and writing release the GIL); the first exception is raised after every item has finished,
    so nothing is left running behind the caller's back."""
    if total_bytes < PARALLEL_BYTES or len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(work, item) for item in items]
        wait(futures)
    return [future.result() for future in futures]
