"""`run` and `dry_run`, and their steps: the checks up front, what earlier runs proved, prepare
every store, reserve a timestamp, back up, write the pending manifest, replace, complete; and put
everything back when a step fails."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from store_migrate import __version__
from store_migrate.commands import recovery
from store_migrate.commands.backups import EarlyCopies, holds, write_backup
from store_migrate.commands.prepare import (
    Known,
    PreparedStore,
    check_known,
    prepare,
    refuse_holes,
)
from store_migrate.core import access, manifest, transform, workdir
from store_migrate.core.config import Settings, check_present
from store_migrate.core.manifest import COMPLETE, PENDING, REVERTED, Clock, Manifest, StoreEntry, utc_now
from store_migrate.core.progress import SILENT, Progress
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import ConcurrentWrite, RunFailed, StoreMigrateError, describe_os_error
from store_migrate.fs import durable, interrupts, ondisk, workers
from store_migrate.fs.interrupts import Interrupted, interruptible, shielded
from store_migrate.fs.lock import locked
from store_migrate.logs import timed

log = structlog.get_logger("store_migrate")


@dataclass
class RunResult:
    manifest_path: str
    backup_dir: str
    manifest: Manifest
    stores: list[PreparedStore] = field(default_factory=list)




def known_results(settings: Settings) -> dict[str, Known]:
    """What the newest complete manifest written by this very transform proves about each store
    path: bytes with its after_sha256 are already migrated and need no parsing."""
    for path, record in manifest.each_in(WorkDir(settings.work_dir).manifests, newest_first=True):
        if not record.complete:
            continue
        if record.transform_version != transform.TRANSFORM_VERSION or record.tool_version != __version__:
            return {}
        return {
            e.path: Known(e.after_sha256, e.counts, e.validation_problems or 0, path, e.after_identity, e)
            for e in record.stores
            if e.validation_problems is not None
        }
    return {}


@dataclass(frozen=True)
class _Stamp:
    """A run's TIMESTAMP, reserved: no other run in the work directory has it."""

    moment: datetime
    name: str
    backup_dir: str
    """Made by the reservation, so this run owns it."""
    manifest_path: str


def _reserve_stamp(settings: Settings, clock: Clock) -> _Stamp:
    """A timestamp no other run in this work directory has, with its new backup directory.

    Names sort by time, so two runs in the same second cannot share one: the second waits for
    the next second. The backup directory is created exclusively, which is the reservation.
    Every part of the work directory is checked (workdir.py) before anything is written in it.
    """
    work = WorkDir(settings.work_dir)
    work.create()
    while True:
        moment = clock()
        stamp = workdir.stamp(moment)
        taken = os.path.lexists(work.manifest_path(stamp))
        if not taken and durable.make_new_dir(work.backup_dir(stamp)):
            return _Stamp(moment, stamp, work.backup_dir(stamp), work.manifest_path(stamp))
        time.sleep(max(0.01, 1 - moment.microsecond / 1e6))


def _replace(prepared: PreparedStore) -> ondisk.FileIdentity | None:
    """Rename the prepared new bytes over one store, unless it changed since it was read."""
    expected = None if prepared.before is None else prepared.before.identity
    if ondisk.identity(prepared.at) != expected:
        raise ConcurrentWrite(
            f"[{prepared.store}] {prepared.path} changed on disk while the run worked "
            "(is the service still writing it?)",
            hint="stop the service's writers or wait, then rerun; the newer data was kept",
        )
    assert prepared.temp is not None
    with timed() as clock:
        temp, prepared.temp = prepared.temp, None
        durable.commit_temp(temp, prepared.at)
    log.info("store.replaced", store=prepared.store, path=prepared.path, bytes=prepared.after_size,
             sha256=prepared.after_sha256, **clock)
    return ondisk.identity(prepared.at)


Replaced = list[tuple[PreparedStore, ondisk.FileIdentity | None, str | None]]
"""Stores this run replaced: the store, the identity of our new file, and its backup."""


def _put_back(replaced: Replaced) -> list[str]:
    """Return replaced stores to their old bytes (from their backups); what could not be."""
    failures = []
    for prepared, ours, backup in reversed(replaced):
        try:
            if ondisk.identity(prepared.at) != ours:
                failures.append(f"{prepared.path} (changed again since this run replaced it)")
                continue
            if prepared.before is None:
                durable.remove(prepared.at)
            else:
                assert backup is not None
                saved = ondisk.read_snapshot(backup)
                if saved is None or saved.sha256 != prepared.before.sha256:
                    failures.append(f"{prepared.path} (its backup {backup} does not hold the old bytes)")
                    continue
                before = prepared.before
                durable.atomic_replace(prepared.at, saved.data, mode=before.ownership.mode,
                                       owner=before.ownership.owner)
            log.info("store.put_back", store=prepared.store, path=prepared.path)
        except OSError as exc:
            failures.append(f"{prepared.path} ({exc.strerror})")
    return failures


def prepare_all(
    settings: Settings,
    stores: list[ondisk.Located],
    allow_empty: bool,
    strict: bool,
    known: dict[str, Known],
    progress: Progress,
    write: bool = True,
    early: EarlyCopies | None = None,
) -> list[PreparedStore]:
    """Prepare every store (in parallel when big); if any cannot be, discard what the others
    prepared and raise the first failure in store order. `stores` are where the store paths
    lead (ondisk.locate_stores), held (durable.held). With `early`, the stores that go to worker
    processes are copied for their backups meanwhile."""
    for store, found in zip(settings.stores, stores, strict=True):
        refuse_holes(store.kind, store.path, found.at)
    sizes = [ondisk.size_of(found.at) for found in stores]
    shortcuts = _shortcuts(settings, stores, sizes, known, strict, progress)
    rest = [i for i, done in enumerate(shortcuts) if done is None]
    full = _prepare_in_full(settings, stores, rest, sizes, (allow_empty, strict, write), progress, early)
    outcomes: list[PreparedStore | BaseException] = [done for done in shortcuts if done is not None]
    for i, outcome in zip(rest, full, strict=True):
        outcomes.insert(i, outcome)
    prepared = [o for o in outcomes if isinstance(o, PreparedStore)]
    failures = [o for o in outcomes if not isinstance(o, PreparedStore)]
    if failures:
        for done in prepared:
            done.discard()
        raise failures[0]
    return prepared


def _shortcuts(
    settings: Settings, stores: list[ondisk.Located], sizes: list[int], known: dict[str, Known], strict: bool,
    progress: Progress,
) -> list[PreparedStore | None]:
    """Each store an earlier run of this transform proves already migrated (prepare.check_known,
    in threads); None for a store to prepare in full."""
    known_bytes = sum(size for s, size in zip(settings.stores, sizes, strict=True) if s.path in known)
    with progress.task("hashing stores", known_bytes) as advance:

        def shortcut(i: int) -> PreparedStore | None:
            store, found = settings.stores[i], stores[i]
            if store.path not in known:
                return None
            return check_known(store.kind, store.path, found.target, known[store.path], at=found.at, strict=strict,
                               advance=advance)

        return workers.in_threads(shortcut, range(len(stores)), sum(sizes))


def _prepare_in_full(
    settings: Settings, stores: list[ondisk.Located], rest: list[int], sizes: list[int],
    options: tuple[bool, bool, bool], progress: Progress, early: EarlyCopies | None,
) -> list[PreparedStore | BaseException]:
    """`prepare` for the stores numbered in `rest`, in worker processes when they are big
    (workers.forked), each with `options` (allow_empty, strict, write); what each gave or raised.
    With `early`, the stores going to workers are copied for their backups meanwhile, starting
    when a worker finishes and leaves a core free (backups.py)."""
    siblings = tuple(found.at for found in stores)
    jobs = [(settings.stores[i].kind, settings.stores[i].path, stores[i].target, stores[i].at, siblings, *options)
            for i in rest]
    rest_sizes = [sizes[i] for i in rest]
    if early is not None and workers.forks(rest_sizes):
        for i in sorted(rest, key=lambda i: -sizes[i]):
            if os.path.isfile(stores[i].at):
                early.start(settings.stores[i].kind, stores[i].at)
    with workers.forked(_prepare_job, jobs, rest_sizes) as pool, \
            progress.task(f"parsing, checking and encoding {len(rest)} store(s)", sum(rest_sizes)) as advance:
        finished: list[int] = []  # the workers are forked before the progress display starts a thread

        def finish(job: int) -> None:
            advance(rest_sizes[job])
            finished.append(job)
            if early is not None and len(jobs) - len(finished) < workers.MAX_RUNNING:  # a core is free
                early.release()

        return pool.results(on_done=finish)


def _prepare_job(
    store: str, path: str, target: str, at: str, siblings: tuple[str, ...], allow_empty: bool, strict: bool,
    write: bool,
) -> PreparedStore:
    return prepare(store, path, target, at=at, siblings=siblings, allow_empty=allow_empty, strict=strict, write=write)


def backup_and_replace(
    settings: Settings, prepared: list[PreparedStore], clock: Clock, progress: Progress, early: EarlyCopies
) -> RunResult:
    """Back up every store, write the pending manifest, replace the stores that change, mark the
    manifest complete. A failure or a signal before the manifest exists leaves no trace of this
    run; after it, what was replaced is put back (`_fail`)."""
    reserved, record, backups = _back_up_and_record(settings, clock, prepared, progress, early)
    replaced = _replace_all(record, reserved.manifest_path, prepared, backups)
    with interrupts.shielded(then_stop=False):
        _complete(record, reserved.manifest_path, prepared, replaced)
        interrupts.done()
    return RunResult(reserved.manifest_path, reserved.backup_dir, record, prepared)


def _back_up_and_record(
    settings: Settings, clock: Clock, prepared: list[PreparedStore], progress: Progress, early: EarlyCopies
) -> tuple[_Stamp, Manifest, list[str | None]]:
    """Reserve the run's TIMESTAMP, back up every store and write the pending manifest; the stamp,
    the manifest and each store's backup. A failure or a signal before the manifest exists
    removes the backup directory again. A signal during the reservation waits for its end (at
    most a second, when the stamp was taken): the directory it makes is then known, so removed."""
    reserved: _Stamp | None = None
    try:
        with interrupts.shielded():
            reserved = _reserve_stamp(settings, clock)
        backups = _back_up(prepared, reserved.name, reserved.backup_dir, progress, early)
        record = _pending(reserved.moment, prepared, backups, reserved.backup_dir)
        durable.create_new(reserved.manifest_path, record.to_bytes())
    except BaseException as exc:
        with interrupts.shielded(then_stop=False):
            # A manifest written, then a sync failed: it must say what happened.
            if reserved is not None and os.path.lexists(reserved.manifest_path):
                if isinstance(exc, (OSError, StoreMigrateError)):
                    raise _fail(record, reserved.manifest_path, [], exc) from exc
                raise
            if reserved is not None:
                _drop(reserved.backup_dir)
        raise
    return reserved, record, backups


def _replace_all(
    record: Manifest, manifest_path: str, prepared: list[PreparedStore], backups: list[str | None]
) -> Replaced:
    """Replace every store that changes, in store order; on a failure, put back what was replaced
    and mark the manifest reverted (`_fail`)."""
    replaced: Replaced = []
    try:
        log.info("manifest.written", path=manifest_path, status=PENDING)
        for p, backup in zip(prepared, backups, strict=True):
            _replace_one(p, backup, replaced)
    except (OSError, StoreMigrateError) as exc:
        with interrupts.shielded(then_stop=False):
            raise _fail(record, manifest_path, replaced, exc) from exc
    return replaced


def _drop(backup_dir: str) -> None:
    """Remove the backups of a run that stopped before its manifest existed (nothing refers to them)."""
    try:
        durable.remove_tree(backup_dir)
    except OSError as exc:
        log.warning("backup.not_removed", path=backup_dir, error=describe_os_error(exc))


def _back_up(
    prepared: list[PreparedStore], stamp: str, backup_dir: str, progress: Progress, early: EarlyCopies
) -> list[str | None]:
    total = sum(p.before.size for p in prepared if p.before)
    early.release()  # normally done already, when the workers finished
    with progress.task("backing up and reading back", 2 * total) as advance:
        return workers.in_threads(
            lambda p: write_backup(p, stamp, backup_dir, advance, early.take(p.store)), prepared, total
        )


def _pending(moment: datetime, prepared: list[PreparedStore], backups: list[str | None], backup_dir: str) -> Manifest:
    return Manifest(
        generated_at=moment.strftime(workdir.TIME_FORMAT),
        stores=[_entry(p, backup) for p, backup in zip(prepared, backups, strict=True)],
        status=PENDING,
        tool_version=__version__,
        transform_version=transform.TRANSFORM_VERSION,
        backup_dir=backup_dir,
    )


def _replace_one(p: PreparedStore, backup: str | None, replaced: Replaced) -> None:
    if not p.changed:
        log.info("store.unchanged", store=p.store, path=p.path, sha256=p.after_sha256)
        return
    try:
        replaced.append((p, _replace(p), backup))
    except (OSError, StoreMigrateError):
        # A failure after the rename (fsync of the directory) leaves our bytes in place.
        if holds(p.at, p.after_sha256):
            replaced.append((p, ondisk.identity(p.at), backup))
        raise


def _complete(record: Manifest, manifest_path: str, prepared: list[PreparedStore], replaced: Replaced) -> None:
    record.status = COMPLETE
    record.stores = _with_identities(record.stores, prepared, replaced)
    try:
        durable.atomic_replace(manifest_path, record.to_bytes())
    except OSError as exc:
        raise RunFailed(
            f"every store was migrated, but manifest {manifest_path} could not be marked complete: "
            f"{describe_os_error(exc)}",
            hint="rerun the backfill (it puts the stores back, migrates them again and writes a complete "
            f"manifest), or roll back with {manifest_path}",
        ) from exc
    log.info("manifest.written", path=manifest_path, status=COMPLETE)


def _entry(p: PreparedStore, backup: str | None) -> StoreEntry:
    """A store's manifest entry. A store already migrated by an earlier run (`origin`) keeps that
    run's before state (its backup was linked into this run's directory), so rolling back this
    manifest returns it to its bytes before the migration, not to the migrated bytes it has now."""
    origin = p.origin
    return StoreEntry(
        store=p.store,
        path=p.path,
        existed=p.before is not None if origin is None else origin.existed,
        backup_path=backup,
        before_sha256=(None if p.before is None else p.before.sha256) if origin is None else origin.before_sha256,
        after_sha256=p.after_sha256,
        changed=p.changed if origin is None else origin.changed,
        counts=p.counts,
        validation_problems=p.report.unreadable,
        resolved_path=p.target,
    )


def already_recorded(prepared: list[PreparedStore]) -> str | None:
    """The manifest whose after bytes every store still holds, when this run would change
    nothing: it is the one that rolls the migration back, so no new manifest (whose rollback would
    change nothing) is written."""
    origins = {p.reused for p in prepared}
    if len(origins) != 1 or any(p.changed or p.origin is None for p in prepared):
        return None
    return origins.pop()


def _with_identities(entries: list[StoreEntry], prepared: list[PreparedStore], replaced: Replaced) -> list[StoreEntry]:
    """Record each store file's identity as it holds its after_sha256 bytes: the new file for a
    replaced store, the file as read for an unchanged one."""
    ours = {p.store: identity for p, identity, _ in replaced}
    result = []
    for entry, p in zip(entries, prepared, strict=True):
        identity = ours.get(p.store) if p.changed else (None if p.before is None else p.before.identity)
        result.append(dataclasses.replace(entry, after_identity=None if identity is None else identity.to_json()))
    return result


def _fail(record: Manifest, manifest_path: str, replaced: Replaced, exc: Exception) -> StoreMigrateError:
    """Undo a run that failed part-way and describe what happened."""
    cause = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    failures = _put_back(replaced)
    if failures:
        log.error("run.failed", manifest=manifest_path, cause=cause, not_put_back=failures)
        return RunFailed(
            f"run failed: {cause}; could not put back: {'; '.join(failures)}",
            hint=f"run the rollback with manifest {manifest_path}",
        )
    record.status = REVERTED
    try:
        durable.atomic_replace(manifest_path, record.to_bytes())
    except OSError as write_error:
        log.error("manifest.not_updated", path=manifest_path, error=str(write_error))
    log.error("run.failed", manifest=manifest_path, cause=cause, put_back=[p.path for p, _, _ in replaced])
    if isinstance(exc, (ConcurrentWrite, Interrupted)):
        exc.message += f"; stores this run had replaced were put back (manifest {manifest_path} is marked reverted)"
        return exc
    return RunFailed(
        f"run failed: {cause}; every store holds its pre-run bytes again",
        hint=f"manifest {manifest_path} is marked reverted; fix the cause and rerun",
    )


def run(
    settings: Settings,
    *,
    allow_empty: bool = False,
    allow_missing: bool = False,
    strict: bool = False,
    lock_timeout: float = 30.0,
    clock: Clock = utc_now,
    progress: Progress = SILENT,
) -> RunResult:
    """Backfill every store: prepare all, back up all, write a pending manifest, replace, complete.
    Refuses first when no store exists (unless `allow_missing`), a path is unsafe, or this user
    lacks a permission."""
    located = _preflight(settings, allow_missing)
    targets = [found.target for found in located]
    work = WorkDir(settings.work_dir)
    with interruptible(), locked(targets, lock_timeout), durable.held(located, create=True) as stores:
        recovery.remove_leftovers(stores, settings.work_dir)
        with shielded():
            for pending in recovery.pending_runs(work, {s.path for s in settings.stores} | set(targets)):
                recovery.recover(pending, clock)
        try:
            with EarlyCopies(work.backups) as early:
                prepared = prepare_all(settings, stores, allow_empty, strict, known_results(settings), progress,
                                       early=early)
                recorded = already_recorded(prepared)
                if recorded is not None:
                    log.info("run.already_migrated", manifest=recorded, stores=[p.store for p in prepared])
                    origin, run_stamp = WorkDir.of_manifest(recorded)
                    return RunResult(recorded, origin.backup_dir(run_stamp), manifest.load(recorded), prepared)
                try:
                    return backup_and_replace(settings, prepared, clock, progress, early)
                finally:
                    for p in prepared:
                        p.discard()
        except BaseException:
            with shielded(then_stop=False):  # workers and copies stopped early leave temporary files
                recovery.remove_leftovers(stores, None)
                durable.remove_leftover_temps(work.backups, mine=True)
            raise


def dry_run(
    settings: Settings,
    *,
    allow_empty: bool = False,
    allow_missing: bool = False,
    strict: bool = False,
    progress: Progress = SILENT,
) -> list[PreparedStore]:
    """Everything a run does but write: each store read, checked, transformed, validated and
    encoded in memory. Refuses exactly as a run would, permissions included. Leaves no file
    behind (no backup, manifest or temporary file; the lock is a kernel lock on the directory,
    not a file)."""
    with durable.held(_preflight(settings, allow_missing), create=False) as stores:
        prepared = prepare_all(settings, stores, allow_empty, strict, known_results(settings), progress, write=False)
    log.info("run.dry", stores=[p.store for p in prepared], would_change=[p.store for p in prepared if p.changed])
    return prepared


def _preflight(settings: Settings, allow_missing: bool) -> list[ondisk.Located]:
    """What a run and a dry run check before any lock, read or write: where the stores are (and
    that some exist); that every store path leads safely to a regular file or to nothing, no two
    stores are one file and none lies in the work directory (ondisk.py); that the parts of the
    work directory that exist are trusted (workdir.py); and that this user may do everything the
    run does (access.py). Where each store path leads."""
    ondisk.require_printable(settings.work_dir, "work directory (WORK_DIR)")
    check_present(settings, allow_missing=allow_missing)
    located = ondisk.locate_stores([(s.kind, s.path, s.source) for s in settings.stores], settings.work_dir)
    WorkDir(settings.work_dir).check()
    access.check_run(settings)
    return located
