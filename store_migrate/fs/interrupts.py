"""SIGTERM, SIGINT and SIGHUP during a run or rollback: stop at once, cleanly.

While a command that changes stores runs, the first of these signals raises `Interrupted` in the
main thread, wherever it is. The command's ordinary failure handling then does what it does for
any error: a run puts back every store it already replaced and marks its manifest `reverted`;
before the first replacement nothing was changed. Further signals during that clean-up are
noted and ignored, so a second Ctrl-C cannot cut a put-back short. A `kill -9` or a power cut
leaves a `pending` manifest, which the next run recovers (recovery.py).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import structlog

from store_migrate.errors import StoreMigrateError

log = structlog.get_logger("store_migrate")
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(StoreMigrateError):
    """A signal asked the command to stop; it exits 128 + the signal's number, as a shell would."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}", hint="stores this run had replaced were put back; rerun when ready")
        self.signum = signum
        self.exit_code = 128 + signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn the first SIGTERM/SIGINT/SIGHUP into `Interrupted` for the duration of the block.
    Only the main thread can receive Python signal handlers; elsewhere (a library caller's own
    thread) the block runs with the handlers the process has."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum: int, _: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1 and not _state.shielded and not _state.done:
            raise Interrupted(signum)
        if len(received) == 1 and not _state.done:
            _state.deferred = signum
            return
        log.warning("signal.ignored", signal=signal.Signals(signum).name,
                    reason="the work is done" if _state.done else "already stopping; nothing is cut short")

    previous = {signum: signal.signal(signum, handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.completed = _state.completed or _state.done
        _state.deferred, _state.done = None, False


class _State:
    shielded = 0
    deferred: int | None = None
    done = False
    completed = False


_state = _State()


def completed() -> bool:
    """Whether a command of this process completed its changes (`done`): what is left is printing,
    which a signal must not turn into a failure (the CLI's own handler asks)."""
    return _state.completed


def done() -> None:
    """The command's changes are complete (a run's manifest is marked complete): a signal from
    now on is logged and ignored, so that a finished migration never reports a failure."""
    _state.done = True


@contextmanager
def shielded(*, then_stop: bool = True) -> Iterator[None]:
    """A block no signal may cut short (recovering a pending run, putting stores back, marking a
    manifest). A signal that arrives meanwhile is raised as `Interrupted` when the block ends if
    `then_stop` and the block did not fail; otherwise (the command is ending anyway) it is only
    logged."""
    _state.shielded += 1
    try:
        yield
    finally:
        _state.shielded -= 1
    if not _state.shielded and _state.deferred is not None:
        signum, _state.deferred = _state.deferred, None
        if then_stop:
            raise Interrupted(signum)
        log.warning("signal.ignored", signal=signal.Signals(signum).name, reason="the command was ending anyway")
