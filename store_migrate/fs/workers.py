"""Run per-store work on both cores when the stores are big.

The work for one store (parse, validate, encode) is pure CPU under the GIL, so stores are spread
over forked worker processes, biggest first, at most one per core. Every worker is forked before
any other thread of this process starts (`forked`), and waits for a go token. A worker inherits the loaded
modules, the logging configuration, the disabled cyclic GC and the run's locks; it sends its
small result back through a pipe and leaves with os._exit, so the hundreds of megabytes of
parsed objects it built are never freed one by one (measured: 0.2-0.4 s per big store). It is
killed with its parent, so a killed run's locks go away with all of its processes.

Small stores are done in this process: a fork costs more than it saves there, and the tests that
inject faults into file operations patch this process only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import selectors
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from store_migrate.errors import StoreMigrateError

PARALLEL_BYTES = 16 * 2**20
"""Below this many bytes of stores in all, everything runs in this process."""

MAX_RUNNING = 2
"""Workers running at once, however many cores: there are three stores and the biggest is the
critical path, so a third worker could only shorten the smaller ones, and it would compete with
the backup copies this process makes on a free core meanwhile (backups.EarlyCopies). Measured on
the 2-core machines the bench runs on (PERFORMANCE.md); raise it only with a bench showing a gain."""

_in_worker = False
_kept: list[Any] = []
_exiting: list[int] = []
"""Workers that had sent their result but were still exiting when reaped (see `_reap`)."""


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
_GO = b"g"


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
    with forked(work, jobs, sizes) as pool:
        return pool.results(on_done)


@contextmanager
def forked(
    work: Callable[..., Result], jobs: Sequence[tuple[Any, ...]], sizes: Sequence[int]
) -> Iterator[Pool[Result]]:
    """A `Pool` for these jobs: when they go to worker processes, every worker is forked now,
    before the caller starts any thread (a progress display, a copy), because a process must not
    fork while other threads run: a lock one of them holds at that moment stays locked forever in
    the child. Each worker waits for a go token, handed out as cores free up. On leaving, workers
    never started are told to exit and any still running are killed; all are reaped."""
    pool = Pool(work, jobs, sizes)
    try:
        yield pool
    finally:
        pool.close()


@dataclass
class _Child:
    pid: int
    result_fd: int | None
    """Where the worker sends its result (read end), until it reaches end-of-file."""
    go_fd: int | None
    """Where the go token is written (write end), until it is."""
    reaped: bool = False


class Pool(Generic[Result]):
    """Jobs run by workers forked up front (see `forked`), or in this process when small."""

    def __init__(self, work: Callable[..., Result], jobs: Sequence[tuple[Any, ...]], sizes: Sequence[int]) -> None:
        self._work, self._jobs = work, list(jobs)
        self._order = sorted(range(len(jobs)), key=lambda i: -sizes[i])
        self._cores = min(len(jobs), os.cpu_count() or 1, MAX_RUNNING)
        self._children: dict[int, _Child] = {}
        if forks(sizes):
            _collect(block=True)
            try:
                for index in self._order:
                    inherited = [fd for c in self._children.values() for fd in (c.result_fd, c.go_fd) if fd is not None]
                    self._children[index] = _fork(work, self._jobs[index], inherited)
            except BaseException:  # a fork failed (EAGAIN, ENOMEM): the workers made so far exit
                self.close()
                raise

    def results(self, on_done: Callable[[int], None] | None = None) -> list[Result | BaseException]:
        """Run every job (biggest first, at most one per core); the outcomes in job order."""
        done = on_done or (lambda _: None)
        if not self._children:
            outcomes = []
            for index, job in enumerate(self._jobs):
                outcomes.append(_call(self._work, job))
                done(index)
            return outcomes
        pending = list(self._order)
        results: dict[int, Result | BaseException] = {}
        running: dict[int, tuple[int, bytearray]] = {}  # result fd -> (job index, bytes so far)
        with selectors.DefaultSelector() as selector:
            while pending or running:
                while pending and len(running) < self._cores:
                    index = pending.pop(0)
                    child = self._children[index]
                    _start(child)
                    assert child.result_fd is not None
                    running[child.result_fd] = (index, bytearray())
                    selector.register(child.result_fd, selectors.EVENT_READ)
                for key, _ in selector.select():
                    fd = int(key.fd)
                    index, buffer = running[fd]
                    chunk = os.read(fd, 1 << 20)
                    if chunk:
                        buffer += chunk
                        continue
                    selector.unregister(fd)
                    del running[fd]
                    child = self._children[index]
                    os.close(fd)
                    child.result_fd = None
                    status = _reap(child.pid)
                    child.reaped = True
                    results[index] = _outcome(buffer, status, self._jobs[index])
                    done(index)
        return [results[i] for i in range(len(self._jobs))]

    def close(self) -> None:
        """Workers never started exit at once (their go pipe closes); any still running (the
        caller gave up) are killed. Every one is reaped."""
        for child in self._children.values():
            if child.go_fd is not None:
                os.close(child.go_fd)
                child.go_fd = None
            elif not child.reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
        for child in self._children.values():
            if child.result_fd is not None:
                os.close(child.result_fd)
                child.result_fd = None
            if not child.reaped:
                os.waitpid(child.pid, 0)
                child.reaped = True
        _collect(block=False)


def _start(child: _Child) -> None:
    """Hand a forked worker its go token."""
    assert child.go_fd is not None
    with contextlib.suppress(BrokenPipeError):  # it died waiting: its end-of-file is reported as a death
        os.write(child.go_fd, _GO)
    os.close(child.go_fd)
    child.go_fd = None


def _fork(work: Callable[..., Any], job: tuple[Any, ...], inherited: list[int]) -> _Child:
    """Fork a worker for `job` that waits for its go token. `inherited`: the pipes of the
    workers forked before it, which it closes (the parent alone must hold them)."""
    parent = os.getpid()
    result_read, result_write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(result_write)
        os.close(go_read)
        return _Child(pid, result_read, go_write)
    code = 1
    try:
        os.close(result_read)
        os.close(go_write)
        for fd in inherited:
            os.close(fd)
        code = _serve(parent, work, job, go_read, result_write)
    finally:
        os._exit(code)


def _serve(parent: int, work: Callable[..., Any], job: tuple[Any, ...], go_read: int, result_write: int) -> int:
    """A forked worker: wait for the go token, run the job, send the outcome; the exit code."""
    _die_with(parent)
    if os.read(go_read, 1) != _GO:  # the parent went on without this job
        return 0
    os.close(go_read)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # not the parent's progress display
    global _in_worker
    _in_worker = True
    try:
        outcome: Any = _call(work, job)
    except Exception:  # noqa: BLE001 -- a bug: reported to the parent, which raises WorkerFailed
        outcome = WorkerFailed(f"worker failed on {job[:2]}:\n{traceback.format_exc()}")
    payload = memoryview(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    while payload:
        payload = payload[os.write(result_write, payload):]
    os.close(result_write)  # the parent goes on now, not after the kernel has freed our memory
    return 0


def _reap(pid: int) -> int:
    """The wait status of a worker whose pipe reached end-of-file. A worker that closed its pipe
    itself had sent its whole result and is only exiting: 0 at once, and it is reaped later
    (`_collect`), not waited for while the kernel frees its memory (~0.05 s for a gigabyte), and
    not by a thread (the next pool forks). One that died closed it by dying."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return status
    _exiting.append(pid)
    return 0


def _collect(*, block: bool) -> None:
    """Reap the workers `_reap` left exiting (`block`: wait for them; they are long done)."""
    for pid in list(_exiting):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _exiting.remove(pid)


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
