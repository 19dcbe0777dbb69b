"""The commands: run, dry_run, verify, rollback, check, prune. One function each; they print
nothing and exit nothing.

Each takes plain arguments, does the work through the library modules (backfill, verification,
restore, ...) and returns a result the CLI turns into the drop-in stdout lines. Operator mistakes
and refusals raise StoreMigrateError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import structlog

from . import duplicates, durable, jsonio, manifest, restore, validate, workers
from .backfill import RunResult, backup_and_replace, known_results, prepare_all, remove_leftovers
from .backups import EarlyCopies
from .config import Settings
from .errors import RollbackRefused, StoreMigrateError
from .lock import locked
from .manifest import REVERTED, Clock, StoreEntry, utc_now
from .prepare import PreparedStore, read_store, validated
from .progress import SILENT, Progress
from .restore import RollbackAction, RollbackResult
from .stores import store_kind
from .verification import StoreCheck, VerifyResult, drops, verify_store

log = structlog.get_logger("store_migrate")

__all__ = ["RollbackAction", "RollbackResult", "RunResult", "StoreCheck", "VerifyResult", "check", "dry_run",
           "prune", "rollback", "run", "verify"]


def run(
    settings: Settings,
    *,
    allow_empty: bool = False,
    strict: bool = False,
    lock_timeout: float = 30.0,
    clock: Clock = utc_now,
    progress: Progress = SILENT,
) -> RunResult:
    """Backfill every store: prepare all, back up all, write a pending manifest, replace, complete."""
    paths = [s.path for s in settings.stores]
    with locked(paths, lock_timeout):
        remove_leftovers(paths, settings.work_dir)
        with EarlyCopies(settings.backups_root) as early:
            prepared = prepare_all(settings, allow_empty, strict, known_results(settings), progress, early=early)
            try:
                return backup_and_replace(settings, prepared, clock, progress, early)
            finally:
                for p in prepared:
                    p.discard()


def dry_run(
    settings: Settings, *, allow_empty: bool = False, strict: bool = False, progress: Progress = SILENT
) -> list[PreparedStore]:
    """Everything a run does but write: each store read, checked, transformed, validated and
    encoded in memory. Refuses exactly as a run would. Leaves no file behind (no backup, manifest
    or temporary file; the lock is a kernel lock on the directory, not a file)."""
    prepared = prepare_all(settings, allow_empty, strict, known_results(settings), progress, write=False)
    log.info("run.dry", stores=[p.store for p in prepared], would_change=[p.store for p in prepared if p.changed])
    return prepared


def verify(
    manifest_path: str,
    *,
    strict: bool = False,
    baseline: str | None = None,
    max_drop: int = 0,
    progress: Progress = SILENT,
) -> VerifyResult:
    """Check every store of a manifest: checksum, shape, counts, its backup, and whether the
    service can read it (a failure with `strict`, else a warning). With `baseline` (another
    manifest), any count that dropped by more than `max_drop` fails. Reports every problem."""
    record = manifest.load(manifest_path)
    earlier = None if baseline is None else manifest.load(baseline)
    problems = []
    if not record.complete:
        problems.append(
            f"manifest {manifest_path} is {record.status}: the run that wrote it did not complete"
            + (" and put every store back" if record.status == REVERTED else "")
        )
    canonical = record.transform_version is not None
    jobs = [(entry, canonical, strict) for entry in record.stores]
    sizes = [durable.size_of(entry.path) for entry in record.stores]
    checks = []
    with progress.task(f"verifying {len(jobs)} store(s)", sum(sizes)) as advance:
        outcomes = workers.map_stores(verify_store, jobs, sizes, on_done=lambda i: advance(sizes[i]))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        checks.append(outcome)
    if earlier is not None:
        assert baseline is not None
        before = {e.store: e.counts for e in earlier.stores}
        for entry, check in zip(record.stores, checks, strict=True):
            check.problems.extend(drops(before.get(entry.store, {}), entry.counts, baseline, max_drop))
    return VerifyResult(record, problems, checks, strict)


def rollback(
    manifest_path: str,
    *,
    force: bool = False,
    lock_timeout: float = 30.0,
    clock: Clock = utc_now,
    progress: Progress = SILENT,
) -> RollbackResult:
    """Return every store of a manifest to its before_sha256 state; check all before changing any."""
    record = manifest.load(manifest_path)
    with locked([e.path for e in record.stores], lock_timeout):
        remove_leftovers([e.path for e in record.stores], None)
        sizes = {e.store: durable.size_of(e.path) + durable.size_of(e.backup_path or "") for e in record.stores}
        total = sum(sizes.values())

        def plan_one(entry: StoreEntry) -> tuple[RollbackAction, str | None]:
            planned = restore.plan(entry, force)
            advance(sizes[entry.store])
            return planned

        with progress.task("checking backups and live stores", total) as advance:
            planned = workers.in_threads(plan_one, record.stores, total)
        refusals = [problem for _, problem in planned if problem]
        if refusals:
            for problem in refusals:
                log.error("rollback.refused", reason=problem)
            raise RollbackRefused("rollback refused, nothing was changed:\n  " + "\n  ".join(refusals))
        actions = [action for action, _ in planned]
        stamp = manifest.stamp(clock())
        with progress.task("restoring", total) as advance:
            workers.in_threads(lambda a: restore.apply(a, record, manifest_path, stamp), actions, total)
            advance(total)
    return RollbackResult(record, actions)


@dataclass
class FileCheck:
    path: str
    kind: str
    report: validate.Report


def check(kind_name: str, paths: list[str], *, limit: int = validate.DEFAULT_LIMIT) -> list[FileCheck]:
    """Can the service read each file as a store of `kind_name`? Reads only; writes nothing."""
    kind = store_kind(kind_name)
    results = []
    for path in paths:
        report = validate.Report(kind.name)
        snapshot = read_store(kind.name, path)
        failure = None
        if snapshot is None:
            failure = "the file does not exist"
        elif not snapshot.data:
            failure = "the file is empty (the service cannot parse it)"
        else:
            try:
                value = jsonio.decode(snapshot.data)
            except jsonio.JsonError as exc:
                where = exc.position(snapshot.data)
                failure = f"does not parse: {exc.reason}" + (f" at {where}" if where else "")
            else:
                report = validated(kind.name, path, value, jsonio.indent(snapshot.data), limit)
                duplicates.add_to(report, kind, snapshot.data, value, limit)
        if failure:
            report.unreadable, report.problems = 1, [validate.Problem("$", failure)]
            log.warning("store.validated", store=kind.name, path=path, readable=False, unreadable=1,
                        problems=[f"$: {failure}"])
        results.append(FileCheck(path, kind.name, report))
    return results


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)
    """Manifests and backup directories removed."""
    kept: list[tuple[str, str]] = field(default_factory=list)
    """Manifests kept, each with the reason."""


def prune(settings: Settings, *, keep: int, dry_run: bool = False) -> PruneResult:
    """Remove old manifests and their backup directories: never the newest `keep`, never one
    whose stores currently hash to its after_sha256 (its rollback may still be needed), never
    one whose backup directory holds a newer file that a forced rollback kept."""
    result = PruneResult()
    hashes: dict[str, str | None] = {}

    def current(path: str) -> str | None:
        if path not in hashes:
            try:
                hashes[path] = durable.hash_file(path)[0]
            except OSError:
                hashes[path] = None
        return hashes[path]

    directory = settings.manifests_dir
    names = sorted(n for n in os.listdir(directory) if n.endswith(".json")) if os.path.isdir(directory) else []
    newest = set(names[-keep:]) if keep > 0 else set()
    for name in names:
        path = os.path.join(directory, name)
        if name in newest:
            result.kept.append((path, f"one of the newest {keep}"))
            continue
        try:
            record = manifest.load(path)
        except StoreMigrateError as exc:
            result.kept.append((path, f"unreadable, left for a person to look at: {exc.message}"))
            continue
        live = [e.store for e in record.stores if current(e.path) == e.after_sha256]
        if live:
            result.kept.append((path, f"{', '.join(live)} still hold its after_sha256: its rollback may be needed"))
            continue
        backups = record.backup_dir or os.path.join(settings.backups_root, name.removesuffix(".json"))
        kept_copies = sorted(n for n in os.listdir(backups) if n.endswith(".pre-rollback.json")) \
            if os.path.isdir(backups) else []
        if kept_copies:
            result.kept.append((path, f"its backups hold files a forced rollback kept ({', '.join(kept_copies)}); "
                                      "remove them by hand once they are not needed"))
            continue
        if not dry_run:
            durable.remove(path)
            if os.path.isdir(backups) and os.path.dirname(os.path.abspath(backups)) == settings.backups_root:
                durable.remove_tree(backups)
        log.info("manifest.pruned", path=path, backups=backups, dry_run=dry_run)
        result.removed += [path, backups]
    return result
