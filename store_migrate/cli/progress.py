"""Progress of long work, for people at a terminal: the bars behind core/progress.py's `Progress`.

The CLI passes `bars()` when stderr is a terminal and --quiet is not given, and the silent
default otherwise, so pipelines get no progress output at all. Work on small stores (under a few
megabytes) is not shown: it is over before a bar would help.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from store_migrate.core.progress import SILENT, Advance, Progress, nothing

__all__ = ["SILENT", "Bars", "Progress", "bars"]

SHOWN_FROM_BYTES = 4 * 2**20


class Bars:
    """rich progress bars on stderr; logs printed meanwhile appear above them."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TimeElapsedColumn(), console=Console(stderr=True), transient=True, auto_refresh=False,
        )

    @contextmanager
    def task(self, description: str, total_bytes: int) -> Iterator[Advance]:
        if total_bytes < SHOWN_FROM_BYTES:
            yield nothing
            return
        # Redrawn by a thread of our own, joined when the task ends (rich's own refresh thread
        # outlives its display for a moment, and the run must not fork while a thread runs).
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(stop,), name="store-migrate-progress", daemon=True)
        with self._progress:
            task = self._progress.add_task(description, total=total_bytes)
            ticker.start()
            try:
                yield lambda n: self._progress.advance(task, n)
            finally:
                stop.set()
                ticker.join()
            self._progress.update(task, completed=total_bytes)
            self._progress.remove_task(task)

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(0.1):
            self._progress.refresh()


def bars() -> Progress:
    return Bars()
