"""Runs that did not finish. A run writes its manifest `pending` before it replaces the first
store and marks it `complete` after the last; a run killed in between (kill -9, a power cut, a
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

from dataclasses import dataclass

import structlog

from . import durable, manifest, ondisk, restore, workdir
from .errors import RunFailed
from .manifest import PENDING, REVERTED, Clock, Manifest
from .workdir import WorkDir

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
    work, run_stamp = WorkDir.of_manifest(pending.path)
    plans: list[tuple[restore.RollbackAction, str | None]] = []
    problems: list[str] = []
    for entry in pending.record.stores:
        try:
            target = ondisk.pinned(entry.path, entry.resolved_path, f"[{entry.store}] store path",
                                   allow_dangling=True).target
        except ondisk.UnsafeStorePath as exc:
            problems.append(exc.message)
            continue
        plans.append(restore.plan(entry, target, force=False))
    problems += [problem for _, problem in plans if problem]
    if problems:
        raise RunFailed(
            f"a run that did not finish left manifest {pending.path} pending, and it cannot be recovered "
            "safely:\n  " + "\n  ".join(problems),
            hint=f"nothing was changed; look at the stores, then roll back with {pending.path} "
            "(--force keeps a copy of each newer file) and rerun",
        )
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
