"""Run per-store work on both cores when the stores are big.

The work for one store (parse, validate, encode) is pure CPU under the GIL, so stores are spread
over worker processes, biggest first. Workers are forked: they inherit the loaded modules, the
logging configuration, the disabled cyclic GC and the run's locks, and they log to the same
stderr; they are killed with their parent. Small stores
are done in this process: a fork costs more than it saves there, and the tests that inject
faults into file operations patch this process only.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from .errors import StoreMigrateError

PARALLEL_BYTES = 16 * 2**20
"""Below this many bytes of stores in all, everything runs in this process."""

Result = TypeVar("Result")
Item = TypeVar("Item")
_PR_SET_PDEATHSIG = 1


def _worker_init(parent: int) -> None:
    """Die with the parent. A worker shares its parent's store locks (forked descriptors), so a
    killed run's locks stay held until its workers are gone too; and they go at once, rather
    than finishing a store for nobody."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
        os._exit(1)


def map_stores(
    work: Callable[..., Result], jobs: Sequence[tuple[Any, ...]], sizes: Sequence[int]
) -> list[Result | BaseException]:
    """`work(*job)` for every job, in job order. A refusal or I/O error is returned in its job's
    place so the caller can clean up what the other jobs did before raising it."""
    workers = min(len(jobs), os.cpu_count() or 1, 2)
    if workers < 2 or sum(sizes) < PARALLEL_BYTES:
        return [_call(work, job) for job in jobs]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
    ) as pool:
        order = sorted(range(len(jobs)), key=lambda i: -sizes[i])
        futures: dict[int, Future[Result]] = {i: pool.submit(work, *jobs[i]) for i in order}
        return [_result(futures[i]) for i in range(len(jobs))]


def _call(work: Callable[..., Result], job: tuple[Any, ...]) -> Result | BaseException:
    try:
        return work(*job)
    except (StoreMigrateError, OSError) as exc:  # raised by the caller after cleaning up
        return exc


def _result(future: Future[Any]) -> Any:
    try:
        return future.result()
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
