"""Runs that did not finish, and the temporary files killed runs leave behind (listed by verify,
check, dry runs and rollback; removed by the next run: `remove_leftovers`).

A run writes its manifest `pending` before it replaces the first store and marks it `complete`
after the last; a run killed in between (kill -9, a power cut, a
crash) leaves it `pending`, with some stores migrated and some not. Nothing may build on that:

- the next run on the same stores first returns every store of such a manifest to its before
  bytes where it holds its after bytes (a rollback of that manifest, which never needs --force:
  a store holding neither stops the run), marks it `reverted`, logs `run.recovered`, and only
  then migrates;
- verify fails on a manifest while a newer one for the same stores is pending;
- rollback refuses an older manifest while a newer one is pending (roll that one back first, or
  run the backfill, which recovers it).
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass

import structlog

from store_migrate.commands import rollback as restore
from store_migrate.core import manifest, workdir
from store_migrate.core.manifest import PENDING, REVERTED, Clock, Manifest
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import RunFailed
from store_migrate.fs import durable, ondisk

log = structlog.get_logger("store_migrate")


@dataclass(frozen=True)
class Pending:
    path: str
    record: Manifest


def _covers(record: Manifest, paths: set[str]) -> bool:
    return any(e.path in paths or (e.resolved_path or e.path) in paths for e in record.stores)


def pending_runs(work: WorkDir, paths: set[str], *, newer_than: str | None = None) -> list[Pending]:
    """The pending manifests in `work` that cover any of `paths` (store paths or their targets),
    oldest first; only those sorting after the manifest file name `newer_than`, when given.
    A manifest that cannot be read is skipped (and logged): it cannot describe a run of ours."""
    found = []
    for path, record in manifest.each_in(work.manifests, after=newer_than):  # verify: not its own or older ones
        if record.status == PENDING and _covers(record, paths):
            found.append(Pending(path, record))
    return found


def recover(pending: Pending, clock: Clock) -> None:
    """Return every store of a pending manifest to its before bytes, then mark it reverted.
    Raises RunFailed, having changed nothing, when a store holds neither its before nor its after
    bytes (someone wrote it since): a person must look."""
    problems: list[str] = []
    located: list[ondisk.Located] = []
    for entry in pending.record.stores:
        try:
            located.append(ondisk.pinned(entry.path, entry.resolved_path, f"[{entry.store}] store path",
                                         allow_dangling=True))
        except ondisk.UnsafeStorePath as exc:
            problems.append(exc.message)
    if problems:
        raise _unrecoverable(pending, problems)
    with durable.held(located, create=True) as stores:
        _put_back(pending, stores, clock)


def _unrecoverable(pending: Pending, problems: list[str]) -> RunFailed:
    return RunFailed(
        f"a run that did not finish left manifest {pending.path} pending, and it cannot be recovered "
        "safely:\n  " + "\n  ".join(problems),
        hint=f"nothing was changed; look at the stores, then roll back with {pending.path} "
        "(--force keeps a copy of each newer file) and rerun",
    )


def _put_back(pending: Pending, stores: list[ondisk.Located], clock: Clock) -> None:
    """Recover a pending run whose store paths still lead where it found them (`stores`, held)."""
    work, run_stamp = WorkDir.of_manifest(pending.path)
    plans = [restore.plan(entry, found.at, force=False)
             for entry, found in zip(pending.record.stores, stores, strict=True)]
    problems = [problem for _, problem in plans if problem]
    if problems:
        raise _unrecoverable(pending, problems)
    actions = [action for action, _ in plans]
    siblings = tuple(action.target for action in actions)
    stamp = workdir.stamp(clock())
    for action in actions:
        restore.apply(action, work.backup_dir(run_stamp), stamp, siblings)
    mark_reverted(pending.path, pending.record)
    log.warning("run.recovered", manifest=pending.path,
                restored=[a.path for a in actions if a.action == "restored"],
                removed=[a.path for a in actions if a.action == "removed"])


def mark_reverted(path: str, record: Manifest) -> None:
    record.status = REVERTED
    durable.atomic_replace(path, record.to_bytes())


def remove_leftovers(stores: list[ondisk.Located], work_dir: str | None) -> None:
    """Remove temporary files that a killed run or rollback left beside the stores (we hold their
    lock, which every writer of those holds) and in the work directory (shared with runs on other
    stores: only files whose writer is gone)."""
    removed = [
        os.path.join(os.path.dirname(found.target), os.path.basename(temp)) for found in stores
        for temp in durable.remove_leftover_temps(os.path.dirname(found.at), only_for=os.path.basename(found.at),
                                                  locked=True)
    ]
    if work_dir is not None:
        removed += durable.remove_leftover_temps(os.path.join(work_dir, "manifests"))
        backups = os.path.join(work_dir, "backups")
        removed += durable.remove_leftover_temps(backups)  # early copies (backups.py)
        for stamp in sorted(os.listdir(backups)) if os.path.isdir(backups) else ():
            removed += durable.remove_leftover_temps(os.path.join(backups, stamp))
    for path in removed:
        log.warning("temp.removed", path=path)


def leftover_temps(store_paths: list[str], work_dir: str | None = None) -> list[str]:
    """The temporary files that stopped runs or rollbacks left beside these stores (every link
    resolved) and, with `work_dir`, in its manifests/ and backups/, whose writer is gone: each
    logged (`temp.leftover`, a warning) for the operator to know; the next run removes them
    (backfill.remove_leftovers). Reads only."""
    places = sorted({os.path.split(os.path.realpath(path)) for path in store_paths})
    found = [temp for directory, name in places for temp in durable.leftover_temps(directory, only_for=name)]
    if work_dir is not None:
        work = WorkDir(work_dir)
        found += durable.leftover_temps(work.manifests) + durable.leftover_temps(work.backups)
        with suppress(FileNotFoundError, NotADirectoryError, PermissionError):
            for stamp in sorted(os.listdir(work.backups)):
                found += durable.leftover_temps(os.path.join(work.backups, stamp))
    for temp in found:
        log.warning("temp.leftover", path=temp)
    return found


def manifest_leftovers(manifest_path: str, record: Manifest | None = None, *, changes: bool = False) -> list[str]:
    """`leftover_temps` for the stores and the work directory of a manifest (read when not given,
    checked as a command that `changes` stores reads it)."""
    record = manifest.load(manifest_path, changes=changes) if record is None else record
    return leftover_temps(sorted(manifest.covered_paths(record)), WorkDir.of_manifest(manifest_path)[0].root)
