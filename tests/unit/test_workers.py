"""Worker processes: results come back in job order, a worker that dies is reported, not raised,
and no worker is forked while another thread of the process is alive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PROJECT, STORE_FILES, Stores

from store_migrate.cli import progress
from store_migrate.commands import run as cmd_run
from store_migrate.commands import verify as cmd_verify
from store_migrate.core import config
from store_migrate.fs import ondisk, workers

BIG = [workers.PARALLEL_BYTES, workers.PARALLEL_BYTES, workers.PARALLEL_BYTES]


def square_in_a_worker(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def test_results_come_back_in_job_order_from_other_processes() -> None:
    results = workers.map_stores(square_in_a_worker, [(1,), (2,), (3,)], BIG)
    assert [r[0] for r in results] == [1, 4, 9]  # type: ignore[index]
    assert all(r[1] != os.getpid() for r in results)  # type: ignore[index]


def die_or_return(n: int) -> int:
    if n == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


def test_a_killed_worker_is_a_worker_failure_and_the_others_still_report() -> None:
    results = workers.map_stores(die_or_return, [(1,), (2,), (3,)], BIG)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], workers.WorkerFailed)
    assert "died" in str(results[1])


def big_result(n: int) -> bytes:
    return bytes(n)


def test_a_result_bigger_than_the_pipe_buffer_arrives_whole() -> None:
    results = workers.map_stores(big_result, [(10_000_000,), (5,), (0,)], BIG)
    assert results == [bytes(10_000_000), bytes(5), b""]


def read_after_truncation(path: str | None) -> int:
    import faulthandler


    if path is None:
        return 0
    faulthandler.disable()  # the signal is expected: no dump of this worker's stack
    mapped = ondisk.map_snapshot(path)
    assert mapped is not None
    mapped.sha256  # noqa: B018 - the hashing thread is done with the pages
    os.truncate(path, 0)  # an in-place writer truncates the store under the map
    return sum(mapped.data[-4096:])  # SIGBUS: the pages are gone


def test_a_store_truncated_under_a_worker_s_map_is_a_worker_failure(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    store.write_bytes(b"[" + b"0," * 100_000 + b"0]")
    results = workers.map_stores(read_after_truncation, [(str(store),), (None,), (None,)], BIG)
    assert isinstance(results[0], workers.WorkerFailed) and "truncated" in str(results[0])
    assert results[1:] == [0, 0]


@pytest.fixture(scope="module")
def forking_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stores big enough together to go to worker processes (workers.PARALLEL_BYTES)."""
    sys.path.insert(0, str(PROJECT / "bench"))
    import generate

    directory = tmp_path_factory.mktemp("forking")
    rng = generate.random.Random(11)
    for kind, make, megabytes in (("auth", generate.auth, 7), ("codex_threads", generate.codex, 8),
                                  ("domain", generate.domain, 4)):
        (directory / STORE_FILES[kind]).write_text(json.dumps(make(int(megabytes * 1e6), rng), separators=(",", ":")))
    assert sum(p.stat().st_size for p in directory.iterdir()) >= workers.PARALLEL_BYTES
    return directory


@pytest.fixture
def fork_watch() -> Iterator[list[list[str]]]:
    """At every fork of this process, the threads alive then that were not alive before."""
    before = set(threading.enumerate())
    seen: list[list[str]] = []
    watching = [True]

    def at_fork() -> None:
        if watching[0]:
            seen.append([t.name for t in threading.enumerate() if t not in before])

    os.register_at_fork(before=at_fork)
    yield seen
    watching[0] = False  # a hook cannot be unregistered


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="stores go to worker processes only with 2 cores or more")
def test_no_fork_while_another_thread_is_alive(stores: Stores, forking_stores: Path,
                                               fork_watch: list[list[str]]) -> None:
    for kind, name in STORE_FILES.items():
        shutil.copyfile(forking_stores / name, stores.paths[kind])
    settings = config.resolve(environ=stores.environ, cwd=str(stores.root))
    bars = progress.bars()  # a progress display draws from a thread
    result = cmd_run.run(settings, progress=bars)
    assert len(fork_watch) == 3, "each store went to a worker of its own"
    verified = cmd_verify.verify(result.manifest_path, progress=bars)
    assert verified.ok
    cmd_verify.verify(result.manifest_path, strict=True, progress=bars)
    assert len(fork_watch) == 9
    assert fork_watch == [[]] * 9, f"threads alive at a fork: {fork_watch}"


def test_workers_never_started_exit_and_are_reaped() -> None:
    big = [workers.PARALLEL_BYTES] * 3
    with workers.forked(pow, [(2, 3), (2, 4), (2, 5)], big) as pool:
        children = [c.pid for c in pool._children.values()]
        assert len(children) == 3
    for pid in children:  # reaped by close(): no such child any more
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    with workers.forked(pow, [(2, 3), (2, 4), (2, 5)], big) as pool:
        assert pool.results() == [8, 16, 32]


def test_a_fork_that_fails_leaves_no_worker_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    real_fork, pids = os.fork, []

    def fork_twice() -> int:
        if len(pids) == 2:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork_twice)
    with pytest.raises(BlockingIOError), workers.forked(pow, [(2, 3), (2, 4), (2, 5)], [workers.PARALLEL_BYTES] * 3):
        pass
    assert len(pids) == 2
    for pid in pids:  # they exited and were reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
