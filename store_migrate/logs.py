"""structlog configuration: done once, by the CLI, before any command runs.

Logs go to stderr (stdout carries the lines pipelines grep), or with `--log-file` to a file of
their own, so that stderr keeps only the `error:`/`  next:` lines and progress. JSON lines when
stderr is not a terminal, when asked for, and always in a log file; readable console lines on a
terminal, coloured unless NO_COLOR is set or TERM is `dumb`. Events carry paths, hashes, sizes,
counts and timings, never store contents; durations (`*_ms`) are rounded to 0.1 ms. A failure is
an `error` event with the message and hint the operator reads on stderr. The event names are
listed in the README.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import structlog

from store_migrate.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
LOG_FILE_MODE = 0o600

_configured = False


class _Stderr:
    """Whatever sys.stderr is at the moment of writing, so lines printed while a progress bar
    is drawn go through it and appear above the bar."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _LogFile:
    """A log file opened for appending: each line is one write(2), so lines of worker processes
    (which share the descriptor) never interleave."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        while data:
            data = data[os.write(self.fd, data):]
        return len(text)

    def flush(self) -> None:
        return None


def colors_wanted(stream: Any, environ: MutableMapping[str, str] | None = None) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (to anything but nothing) or TERM is dumb."""
    env = os.environ if environ is None else environ
    return bool(stream.isatty()) and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def _round_durations(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every `*_ms` float to 0.1 ms (sums of rounded timings carry float noise: 871.8000000000001)."""
    for key, value in event.items():
        if key.endswith("_ms") and type(value) is float:
            event[key] = round(value, 1)
    return event


def configure(fmt: LogFormat = "auto", *, quiet: bool = False, log_file: str | None = None) -> None:
    """Log to stderr in `fmt`, or with `log_file` as JSON lines to that file (open_log_file)."""
    global _configured
    sink: Any
    if log_file is not None:
        sink = _LogFile(open_log_file(log_file))
        use_json = True
    else:
        sink = _Stderr()
        use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=colors_wanted(sys.stderr))
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _round_durations,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING if quiet else logging.INFO),
        # one write per line (print makes two): lines of worker processes never interleave
        logger_factory=structlog.WriteLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )
    _configured = True


def failed(message: str, hint: str | None, exit_code: int) -> None:
    """Log a failure the CLI reports (`error:` and `  next:` on stderr) as an `error` event,
    once logging is configured."""
    if _configured:
        structlog.get_logger("store_migrate").error("error", message=message, hint=hint, exit_code=exit_code)


def open_log_file(path: str) -> int:
    """A descriptor appending to the log file `path`: a new file is created 0600 (with its
    missing directories, 0700); an existing one is appended to only when it is a regular file
    with no other name, owned by this user or root and writable by nobody else. Never through a
    symbolic link, never a FIFO or device, never in a manifests/ directory. ConfigError says why not."""
    from store_migrate.fs import durable, ondisk

    absolute = os.path.abspath(path)
    ondisk.require_printable(absolute, "log file")
    if os.path.basename(os.path.dirname(os.path.realpath(absolute))) == "manifests":
        raise ConfigError(f"refusing to write the log file {path} into a manifests/ directory",
                          hint="pipelines pick the newest file there as the manifest; write the log elsewhere")
    durable.ensure_dir(os.path.dirname(absolute))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(absolute, flags, LOG_FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"refusing to write the log file {path}: it is a symbolic link",
                              hint="give the path of a new or regular file; a log never writes through a link"
                              ) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise ConfigError(f"refusing to write the log file {path}: it is not a regular file",
                              hint="give the path of a new or regular file") from None
        raise
    try:
        problem = _unsafe_log_file(os.fstat(fd))
        if problem:
            raise ConfigError(f"refusing to append to the log file {path}: {problem}",
                              hint="remove it or give another path; a new log file is created 0600")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unsafe_log_file(st: os.stat_result) -> str | None:
    from store_migrate.fs.ondisk import user_name

    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        return f"it is owned by {user_name(st.st_uid)}, not by {user_name(me)} (who runs this) or root"
    if st.st_nlink > 1:
        return f"it has {st.st_nlink} names (hard links); the log would be appended to another file too"
    if st.st_mode & 0o022:
        return f"it is writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Measure a block: `with timed() as t: ...` then `t["duration_ms"]`."""
    clock: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield clock
    finally:
        clock["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
