"""`rollback`, and its steps: plan each store (check its backup and its live file), keep a copy of a
drifted file when forced, restore or remove."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

import structlog

from store_migrate.commands import recovery
from store_migrate.commands.prepare import read_store
from store_migrate.core import manifest, workdir
from store_migrate.core.manifest import PENDING, Clock, Manifest, StoreEntry, utc_now
from store_migrate.core.progress import SILENT, Progress
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import ConcurrentWrite, RollbackRefused
from store_migrate.fs import durable, ondisk, workers
from store_migrate.fs.interrupts import interruptible
from store_migrate.fs.lock import locked
from store_migrate.logs import timed

log = structlog.get_logger("store_migrate")


def _live_file(entry: StoreEntry, target: str) -> tuple[ondisk.FileState | None, bytes | None]:
    """The live store file as rollback found it, and its bytes. No bytes when its identity
    (device, inode, size, mtime, ctime) is the one the run recorded right after writing it: it
    then holds the after_sha256 bytes and is not read at all (saves reading and hashing every
    migrated store)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None, None
    recorded = ondisk.FileState.as_recorded(st, entry.after_sha256, entry.after_identity)
    if recorded is not None:
        return recorded, None
    read = read_store(entry.store, target)
    return (None, None) if read is None else (read.state, read.data)


@dataclass
class RollbackAction:
    store: str
    path: str
    target: str
    """The store file where the run found it (ondisk.pinned), reached through its directory held
    open (durable.held): the only file read or written."""
    action: str
    """`restored`, `removed` or `skipped`: also the word the CLI prints."""
    reason: str = ""
    backup: ondisk.Snapshot | None = None
    live: ondisk.FileState | None = None
    live_data: bytes | None = None
    """The live file's bytes, when they had to be read (kept before a forced rollback)."""
    forced: bool = False
    """The live file matched neither hash and --force was given: keep a copy first."""
    kept_as: str | None = None
    """Where a drifted live file was kept before a forced rollback replaced or removed it."""


@dataclass
class RollbackResult:
    manifest: Manifest
    actions: list[RollbackAction]


def _read_backup(entry: StoreEntry) -> tuple[ondisk.Snapshot | None, str | None]:
    assert entry.backup_path is not None
    try:
        backup = ondisk.read_snapshot(entry.backup_path)
    except OSError as exc:
        return None, f"[{entry.store}] backup unreadable: {entry.backup_path} ({exc.strerror})"
    if backup is None:
        return None, f"[{entry.store}] backup missing: {entry.backup_path}"
    if backup.sha256 != entry.before_sha256:
        return None, (
            f"[{entry.store}] backup sha mismatch: {entry.backup_path} "
            f"(expected {entry.before_sha256}, actual {backup.sha256})"
        )
    return backup, None


def plan(entry: StoreEntry, target: str, force: bool) -> tuple[RollbackAction, str | None]:
    """What rollback would do for one store, or why it must not."""
    live, live_data = _live_file(entry, target)
    action = RollbackAction(entry.store, entry.path, target, "skipped", live=live, live_data=live_data)
    drift = live is not None and live.sha256 not in (entry.after_sha256, entry.before_sha256)
    if entry.existed:
        action.backup, problem = _read_backup(entry)
        if problem:
            return action, problem
        if live is not None and live.sha256 == entry.before_sha256:
            action.reason = "already at before_sha256"
        else:
            action.action = "restored"
            action.reason = "file missing" if live is None else ""
    elif live is None:
        action.reason = "already absent"
    else:
        action.action = "removed"
    if drift and not force:
        assert live is not None
        return action, (
            f"[{entry.store}] {entry.path} was written after the migration: its sha256 {live.sha256} "
            "matches neither after_sha256 nor before_sha256 (is the service live?); "
            "rerun with --force to keep a copy of it and roll back anyway"
        )
    if drift:
        action.forced = True
    return action, None


def _keep_drifted(action: RollbackAction, directory: str, stamp: str) -> None:
    assert action.live is not None
    kept = os.path.join(directory, workdir.pre_rollback_name(action.store, stamp, action.live.sha256))
    durable.ensure_dir(directory)
    if not os.path.lexists(kept):
        assert action.live_data is not None  # a file at its recorded identity never drifted
        durable.create_new(kept, action.live_data)
    digest, _ = ondisk.hash_file(kept)
    if digest != action.live.sha256:
        raise RollbackRefused(f"[{action.store}] copy {kept} of the newer file does not read back intact")
    action.kept_as = kept
    log.warning("store.kept_before_rollback", store=action.store, path=action.path, kept_as=kept, sha256=digest)


def apply(action: RollbackAction, backup_dir: str, stamp: str, siblings: tuple[str, ...]) -> None:
    """Carry out one planned action; a forced one first keeps the newer file in `backup_dir` (the
    run's own backup directory). A restored file keeps the owner and mode of the file it replaces;
    a recreated one takes them from another store in `siblings` in its directory, else from the
    directory (ondisk.ownership_for_new)."""
    if action.action == "skipped":
        log.info("store.skipped", store=action.store, path=action.path, reason=action.reason)
        return
    target = action.target
    expected = None if action.live is None else action.live.identity
    if ondisk.identity(target) != expected:
        raise ConcurrentWrite(
            f"[{action.store}] {action.path} changed on disk during the rollback",
            hint="stop the service's writers, then rerun the rollback (it is safe to rerun)",
        )
    if action.forced:
        _keep_drifted(action, backup_dir, stamp)
    with timed() as clock:
        if action.action == "removed":
            durable.remove(target)
        else:
            assert action.backup is not None
            live = action.live
            owned = ondisk.ownership_for_new(target, siblings) if live is None else live.ownership
            durable.atomic_replace(target, action.backup.data, mode=owned.mode, owner=owned.owner)
    log.info(
        f"store.{action.action}", store=action.store, path=action.path,
        sha256=None if action.backup is None else action.backup.sha256,
        bytes=None if action.backup is None else len(action.backup.data),
        live_known_by=None if action.live is None else "identity" if action.live_data is None else "hash", **clock,
    )


def rollback(
    manifest_path: str,
    *,
    force: bool = False,
    lock_timeout: float = 30.0,
    clock: Clock = utc_now,
    progress: Progress = SILENT,
) -> RollbackResult:
    """Return every store of a manifest to its before_sha256 state; check all before changing any.
    Only what the run made is touched: the manifest, its directory and the work directory must be
    trusted (workdir.py), each backup must lie in the run's own backup directory (manifest.load),
    and each store path must still lead where the run found it (ondisk.pinned)."""
    record = manifest.load(manifest_path, changes=True)
    work, run_stamp = WorkDir.of_manifest(manifest_path)
    work.check()
    newer = recovery.pending_runs(work, manifest.covered_paths(record), newer_than=os.path.basename(manifest_path))
    if newer:
        _refuse_rollback([f"a newer run did not complete: manifest {p.path} is pending; roll it back first, "
                          "or run the backfill, which recovers it" for p in newer])
    backup_dir = work.backup_dir(run_stamp)
    if os.path.lexists(backup_dir):
        workdir.require_trusted_dir(backup_dir, os.lstat(backup_dir), "backup directory")
    located = [ondisk.pinned_or_reason(entry.path, entry.resolved_path, allow_dangling=True) for entry in record.stores]
    unsafe = [f"[{e.store}] {found}" for e, found in zip(record.stores, located, strict=True) if isinstance(found, str)]
    if unsafe:
        _refuse_rollback(unsafe)
    found_at = [found for found in located if isinstance(found, ondisk.Located)]
    with interruptible(), locked([found.target for found in found_at], lock_timeout), \
            durable.held(found_at, create=True) as held:
        recovery.remove_leftovers(held, None)
        targets = {e.store: found.at for e, found in zip(record.stores, held, strict=True)}
        sizes = {e.store: ondisk.size_of(targets[e.store]) + ondisk.size_of(e.backup_path or "")
                 for e in record.stores}
        total = sum(sizes.values())

        def plan_one(entry: StoreEntry) -> tuple[RollbackAction, str | None]:
            planned = plan(entry, targets[entry.store], force)
            advance(sizes[entry.store])
            return planned

        with progress.task("checking backups and live stores", total) as advance:
            planned = workers.in_threads(plan_one, record.stores, total)
        refusals = [problem for _, problem in planned if problem]
        if refusals:
            _refuse_rollback(refusals)
        actions = [action for action, _ in planned]
        stamp = workdir.stamp(clock())
        with progress.task("restoring", total) as advance:
            siblings = tuple(targets.values())
            workers.in_threads(lambda a: apply(a, backup_dir, stamp, siblings), actions, total)
            advance(total)
        if record.status == PENDING:  # an interrupted run, now rolled back: the next run has nothing to recover
            recovery.mark_reverted(manifest_path, record)
    return RollbackResult(record, actions)


def _refuse_rollback(refusals: list[str]) -> NoReturn:
    for problem in refusals:
        log.error("rollback.refused", reason=problem)
    raise RollbackRefused("rollback refused, nothing was changed:\n  " + "\n  ".join(refusals))
