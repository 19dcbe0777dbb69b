"""One exception family. Each error carries a message written for an operator and an exit code.

Nothing below the CLI prints or exits: commands raise these, the CLI prints `error: <message>`
(and `  next: <hint>`) and exits with the error's `exit_code`: 1, unless a subclass says
otherwise (schemadiff.SchemaDiffUsage 2, interrupts.Interrupted 128 + the signal's number).
"""

from __future__ import annotations

from typing import Any


class StoreMigrateError(Exception):
    """Base of every error an operator can see. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross from worker processes: rebuild them from their fields, whatever __init__ takes.
        return (_rebuild, (type(self), dict(self.__dict__), self.args))


def _rebuild(cls: type[StoreMigrateError], state: dict[str, Any], args: tuple[Any, ...]) -> StoreMigrateError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class SchemaFileError(StoreMigrateError):
    """A file in schemas/ is missing or does not say what the tool needs (a packaging fault)."""


class StoreRefused(StoreMigrateError):
    """A store cannot be migrated without losing data: nothing was written."""

    def __init__(self, path: str, reason: str, *, position: str | None = None) -> None:
        super().__init__(
            f"refusing to migrate {path}: {located(reason, position)}",
            hint="the file was left untouched; fix or restore it, then rerun",
        )
        self.path = path
        self.reason = reason
        self.position = position


class ManifestNotFound(StoreMigrateError):
    def __init__(self, path: str) -> None:
        super().__init__(f"manifest not found: {path}")
        self.path = path


class ManifestInvalid(StoreMigrateError):
    """A manifest that does not parse, fails its schema, or contradicts itself."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"manifest {path} is not usable: {reason}",
            hint="nothing was changed; use an unedited manifest written by a backfill run",
        )
        self.path = path


class LockTimeout(StoreMigrateError):
    """Another process held the lock (flock on the store's directory: lock.py) for too long."""

    def __init__(self, directory: str, store_path: str, holder: str, waited: float) -> None:
        super().__init__(
            f"store {store_path} is locked by {holder} (the lock on directory {directory}); "
            f"gave up after {waited:g}s",
            hint="wait for that run or rollback to finish, or raise --lock-timeout",
        )
        self.directory = directory


class ConcurrentWrite(StoreMigrateError):
    """A store changed on disk between being read and being replaced."""


class RunFailed(StoreMigrateError):
    """A run failed part-way; the message says what was put back."""


class RollbackRefused(StoreMigrateError):
    """Rollback checked the stores and backups and found it cannot proceed safely."""


class ConfigError(StoreMigrateError):
    """The environment names no store that exists (config.check_present): most likely a wrong
    ROOT_DIR, which would otherwise make new empty stores."""


def located(reason: str, position: str | None) -> str:
    """`<reason> at <position>` (a line and column, or a JSON path), or the reason alone."""
    return f"{reason} at {position}" if position else reason


def describe_os_error(exc: OSError) -> str:
    """`<reason>: <file>` for an operating-system error, as an operator reads it."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"
