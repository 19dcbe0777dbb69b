"""Worker processes: results come back in job order, a worker that dies is reported, not raised."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from store_migrate import workers

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

    from store_migrate import durable

    if path is None:
        return 0
    faulthandler.disable()  # the signal is expected: no dump of this worker's stack
    mapped = durable.map_snapshot(path)
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
