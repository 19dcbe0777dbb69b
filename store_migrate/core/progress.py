"""How the library reports progress of long work: phases and bytes through a `Progress`, never
drawing anything itself. `SILENT` is the default (pipelines, tests, --quiet); the CLI passes its
terminal bars (cli/progress.py) when stderr is a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def task(self, description: str, total_bytes: int) -> Any:
        """A context manager yielding `advance(n)`: n more bytes of `total_bytes` are done."""


class Silent:
    @contextmanager
    def task(self, description: str, total_bytes: int) -> Iterator[Advance]:
        yield nothing


def nothing(_: int) -> None:
    return None


SILENT = Silent()
