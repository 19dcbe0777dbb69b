"""Worker processes: results come back in job order, a worker that dies is reported, not raised."""

from __future__ import annotations

import os
import signal

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
