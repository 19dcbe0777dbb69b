"""A run's backups: each store's bytes before the run, in the run's backup directory, read back
and checked against the hash the run read.

Where the stores go to worker processes, this process would sit idle while they parse; it copies
the stores meanwhile (`EarlyCopies`: the copy is kernel work and hashing it releases the GIL),
starting when the first worker finishes and leaves a core free, so the backups are ready when
the preparation is. A copy is made to a temporary file in the backups
directory and takes its name (which holds the hash) once the run's stamp is reserved; if its
read-back hash is not the hash the preparation read, the store changed during the run, and the
run stops with nothing replaced. A backup is a hard link instead when an earlier backup holds
the same bytes (checked by hash).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import structlog

from store_migrate.commands.prepare import PreparedStore
from store_migrate.core import workdir
from store_migrate.core.manifest import StoreEntry
from store_migrate.core.progress import Advance
from store_migrate.errors import ConcurrentWrite, RunFailed, describe_os_error
from store_migrate.fs import durable, ondisk
from store_migrate.logs import timed

log = structlog.get_logger("store_migrate")


def holds(path: str, sha256: str) -> bool:
    """Whether `path` holds exactly the bytes with this hash (used on failure paths only)."""
    try:
        return ondisk.hash_file(path)[0] == sha256
    except OSError:
        return False


@dataclass(frozen=True)
class Copy:
    """A store's bytes copied to a temporary file, and the hash they read back with."""

    temp: str
    sha256: str
    size: int
    duration_ms: float


class EarlyCopies:
    """Stores copied into `directory` by one thread of this process while workers prepare them.
    Use as a context manager: copies never taken are removed on exit."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self._created: list[str] = []
        """Directories made for the copies, deepest first (removed again if left empty)."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-migrate-backup")
        self._copies: dict[str, Future[Copy]] = {}
        self._waiting: list[tuple[str, str]] = []

    def start(self, store: str, target: str) -> None:
        """Copy a store once `release` is called (when a core is free)."""
        if not self._copies and not self._waiting:
            missing = self.directory
            while not os.path.isdir(missing):
                self._created.append(missing)
                missing = os.path.dirname(missing)
            durable.ensure_dir(self.directory)
        self._waiting.append((store, target))

    def release(self) -> None:
        """Start the copies asked for: a worker finished, so a core is free for them."""
        for store, target in self._waiting:
            self._copies[store] = self._pool.submit(self._copy, store, target)
        self._waiting.clear()

    def _copy(self, store: str, target: str) -> Copy:
        with timed() as clock:
            temp = durable.copy_to_temp(target, self.directory, f"{store}.bak.json")
            try:
                sha256, size = ondisk.hash_file(temp)
            except BaseException:
                durable.discard(temp)
                raise
        return Copy(temp, sha256, size, clock["duration_ms"])

    def take(self, store: str) -> Copy | None:
        """The store's copy (the caller now owns its temporary file); None when none was started
        or it failed (the caller then copies the store itself, and reports any error). Call
        `release` first; `take` may then be called from several threads, one store each."""
        future = self._copies.pop(store, None)
        if future is None:
            return None
        try:
            return future.result()
        except OSError as exc:
            log.warning("backup.early_copy_failed", store=store, error=str(exc))
            return None

    def __enter__(self) -> EarlyCopies:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._waiting.clear()
        self._pool.shutdown(wait=True)
        for future in self._copies.values():
            if future.exception() is None:
                durable.discard(future.result().temp)
        self._copies.clear()
        for directory in self._created:  # a run that stopped early leaves no empty directory behind
            with contextlib.suppress(OSError):  # not empty: it holds this run's backups (or another's)
                os.rmdir(directory)


def identical_backup(backups_root: str, store: str, sha256: str, exclude: str) -> str | None:
    """An earlier backup holding exactly these bytes (checked by hash), newest first."""
    suffix = f"-{sha256[:12]}.bak.json"
    for stamp in sorted(os.listdir(backups_root), reverse=True):
        directory = os.path.join(backups_root, stamp)
        if directory == exclude or not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name.startswith(f"{store}-") and name.endswith(suffix):
                candidate = os.path.join(directory, name)
                if holds(candidate, sha256):
                    return candidate
    return None


def _carry_on(prepared: PreparedStore, origin: StoreEntry, stamp: str, backup_dir: str, advance: Advance) -> str | None:
    """Link the backup of the run that migrated this store into this run's backup directory, and
    check that it still holds that run's before bytes."""
    if origin.backup_path is None or origin.before_sha256 is None:
        return None
    path = os.path.join(backup_dir, workdir.backup_name(prepared.store, stamp, origin.before_sha256))
    try:
        durable.link_new(origin.backup_path, path)
        written, size = ondisk.hash_file(path, advance)
    except OSError as exc:
        raise RunFailed(
            f"[{prepared.store}] the backup {origin.backup_path} of the run that migrated {prepared.path} "
            f"cannot be carried on: {describe_os_error(exc)}; no store was changed",
            hint=f"restore that backup, or roll back with {prepared.reused} first",
        ) from exc
    if written != origin.before_sha256:
        durable.discard(path)
        raise RunFailed(
            f"[{prepared.store}] the backup {origin.backup_path} of the run that migrated {prepared.path} no "
            f"longer holds its before_sha256 (reads back as {written}); no store was changed",
            hint="that backup was damaged: keep a copy of the store and investigate before going on",
        )
    log.info("backup.carried_on", store=prepared.store, path=path, linked_to=origin.backup_path, bytes=size,
             sha256=written, manifest=prepared.reused)
    return path


def write_backup(
    prepared: PreparedStore, stamp: str, backup_dir: str, advance: Advance, early: Copy | None = None
) -> str | None:
    """Back up one store (a hard link when an identical backup exists, the early copy when there
    is one) and check its read-back hash against the hash the preparation read."""
    before = prepared.before
    if early is not None and (prepared.origin is not None or before is None):
        durable.discard(early.temp)  # no copy of these bytes is needed
    if prepared.origin is not None:  # already migrated: keep the earlier run's backup
        return _carry_on(prepared, prepared.origin, stamp, backup_dir, advance)
    if before is None:
        return None
    path = os.path.join(backup_dir, workdir.backup_name(prepared.store, stamp, before.sha256))
    with timed() as clock:
        written, size, same = _link_or_copy(prepared, before, path, backup_dir, advance, early)
    if written != before.sha256:
        raise ConcurrentWrite(
            f"[{prepared.store}] {prepared.path} changed on disk while the run worked: its backup reads "
            f"back with sha256 {written}, expected {before.sha256}; no store was changed",
            hint="stop the service's writers or wait, then rerun",
        )
    duration = clock["duration_ms"] + (early.duration_ms if early is not None and same is None else 0)
    log.info("backup.written", store=prepared.store, path=path, bytes=size, sha256=written,
             linked_to=same, early=early is not None and same is None, duration_ms=duration)
    return path


def _link_or_copy(
    prepared: PreparedStore, before: ondisk.FileState, path: str, backup_dir: str, advance: Advance,
    early: Copy | None,
) -> tuple[str, int, str | None]:
    """Make the backup at `path`: a hard link to an earlier backup holding the same bytes, else the
    early copy, else a copy of the store now. Its hash as read back, its size, and the earlier
    backup linked to (None for a copy). An early copy of other bytes is not used (the caller
    refuses: the store changed)."""
    same = None
    if prepared.hashed:  # else only a copy of the file itself proves its bytes
        same = identical_backup(os.path.dirname(backup_dir), prepared.store, before.sha256, backup_dir)
    if early is not None and (same is not None or early.sha256 != before.sha256):
        durable.discard(early.temp)
    if same is not None:
        durable.link_new(same, path)
        advance(before.size)
        written, size = ondisk.hash_file(path, advance)
    elif early is not None:
        written, size = early.sha256, early.size
        if written == before.sha256:
            durable.commit_new(early.temp, path)
        advance(2 * size)
    else:
        durable.copy_new(prepared.at, path, advance=advance)
        written, size = ondisk.hash_file(path, advance)
    return written, size, same
