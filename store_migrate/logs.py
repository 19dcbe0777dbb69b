"""structlog configuration: done once, by the CLI, before any command runs.

Logs go to stderr (stdout carries the lines pipelines grep). JSON lines when stderr is not a
terminal or when asked for; readable console lines on a terminal. Events carry paths, hashes,
sizes, counts and timings, never store contents. The event names are listed in the README.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
ENV_VAR = "STORE_MIGRATE_LOG_FORMAT"


class _Stderr:
    """Whatever sys.stderr is at the moment of writing, so lines printed while a progress bar
    is drawn go through it and appear above the bar."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: LogFormat = "auto", *, quiet: bool = False) -> None:
    stream = sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING if quiet else logging.INFO),
        # one write per line (print makes two): lines of worker processes never interleave
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Measure a block: `with timed() as t: ...` then `t["duration_ms"]`."""
    clock: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield clock
    finally:
        clock["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
