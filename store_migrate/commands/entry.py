"""The commands: run, dry_run, verify, rollback, check, prune. One function each; they print
nothing and exit nothing.

Each takes plain arguments, does the work through the library modules (backfill, verification,
restore, ...) and returns a result the CLI turns into the drop-in stdout lines. Operator mistakes
and refusals raise StoreMigrateError.
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from store_migrate.cli.progress import SILENT, Progress
from store_migrate.commands import compare, recovery
from store_migrate.commands import prune as retention
from store_migrate.commands import rollback as restore
from store_migrate.commands.backups import EarlyCopies
from store_migrate.commands.prepare import PreparedStore, read_store, validated
from store_migrate.commands.prune import PruneResult
from store_migrate.commands.recovery import pending_runs, recover
from store_migrate.commands.rollback import RollbackAction, RollbackResult
from store_migrate.commands.run import (
    RunResult,
    already_recorded,
    backup_and_replace,
    known_results,
    prepare_all,
    remove_leftovers,
)
from store_migrate.commands.verify import StoreCheck, VerifyResult, settle_backup, verify_store
from store_migrate.core import access, manifest, workdir
from store_migrate.core.config import Settings, check_present
from store_migrate.core.manifest import PENDING, REVERTED, Clock, Manifest, StoreEntry, utc_now
from store_migrate.core.stores import store_kind
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import RollbackRefused
from store_migrate.fs import durable, ondisk, workers
from store_migrate.fs.interrupts import interruptible, shielded
from store_migrate.fs.lock import locked
from store_migrate.readable import duplicates, jsonio, parsing, validate

if TYPE_CHECKING:
    from store_migrate.commands.additive import Additive

log = structlog.get_logger("store_migrate")

__all__ = ["PruneResult", "RollbackAction", "RollbackResult", "RunResult", "StoreCheck", "VerifyResult", "check",
           "dry_run", "leftover_temps", "prune", "rollback", "run", "verify"]


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
        remove_leftovers(stores, settings.work_dir)
        with shielded():
            for pending in pending_runs(work, {s.path for s in settings.stores} | set(targets)):
                recover(pending, clock)
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
                remove_leftovers(stores, None)
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


def verify(
    manifest_path: str,
    *,
    strict: bool = False,
    allow_unreadable: bool = False,
    baseline: str | None = None,
    max_drop: int = 0,
    additive: bool = False,
    progress: Progress = SILENT,
) -> VerifyResult:
    """Check every store of a manifest: checksum, shape, counts, its backup, and whether the
    service can read it: from the verdict the run recorded when the bytes are the recorded ones,
    else (and always with `strict`) from a full validation; records it cannot read fail the
    store unless `allow_unreadable`. With `baseline` (another manifest), the comparison of
    compare.py: a count that dropped by more than `max_drop`, more unreadable records, an
    incomplete baseline fail. With `additive`, every store must hold every member and value of
    its backup (additive.py); each backup is then read and hashed once, by its proof, whose hash
    the backup's check takes. Reports every problem."""
    record = manifest.load(manifest_path)
    earlier = None if baseline is None else compare.load(baseline)
    problems = []
    if not record.complete:
        problems.append(
            f"manifest {manifest_path} is {record.status}: the run that wrote it did not complete"
            + (" and put every store back" if record.status == REVERTED else "")
        )
    work, _ = WorkDir.of_manifest(manifest_path)
    for newer in pending_runs(work, _paths(record), newer_than=os.path.basename(manifest_path)):
        problems.append(
            f"a newer run did not complete: manifest {newer.path} is pending; rerun the backfill (which "
            "recovers it) or roll it back, then verify the newest manifest"
        )
    canonical = record.transform_version is not None
    located = [_pinned(entry, allow_dangling=True) for entry in record.stores]
    usable = [i for i, found in enumerate(located) if not isinstance(found, str)]
    # With `additive` each backup is read and hashed by its proof, not by the check as well
    jobs: list[tuple[Any, ...]] = [("verify", record.stores[i], located[i], canonical, strict, allow_unreadable,
                                    not additive) for i in usable]
    sizes = [ondisk.size_of(record.stores[i].path) for i in usable]
    if additive:  # jobs of their own: the biggest store's proof runs beside the other stores' checks
        from . import additive as proofs  # imported before the workers fork; plain verify needs none of it

        jobs += [("additive", *job[1:3]) for job in jobs]
        sizes += [size + ondisk.size_of(record.stores[i].backup_path or "") for i, size in zip(usable, sizes,
                                                                                                strict=True)]
    with workers.forked(_verify_job, jobs, sizes) as pool, \
            progress.task(f"verifying {len(usable)} store(s)", sum(sizes)) as advance:  # forked first: no thread yet
        outcomes = pool.results(on_done=lambda i: advance(sizes[i]))
    done = dict(zip(usable, outcomes, strict=False))
    proven = dict(zip(usable, outcomes[len(usable):], strict=False))
    checks: list[StoreCheck] = []
    for i, (entry, found) in enumerate(zip(record.stores, located, strict=True)):
        outcome = StoreCheck(entry.store, entry.path, problems=[found]) if isinstance(found, str) else done[i]
        proof = proven.get(i)
        for result in (outcome, proof):
            if isinstance(result, BaseException):
                raise result
        # (a proof is there only with `additive`, which imported `proofs`)
        assert isinstance(outcome, StoreCheck) and (proof is None or isinstance(proof, proofs.Additive))
        if proof is not None:
            outcome.additive = proof
            settle_backup(outcome, entry, proof.backup_sha256)
        checks.append(outcome)
    comparison = None
    if earlier is not None:
        assert baseline is not None
        comparison = compare.compare(earlier, record, baseline, manifest_path, max_drop=max_drop)
        by_store = {check.store: check for check in checks}
        for finding in comparison.findings:
            if finding.kind == "incomplete" and finding.side == "b":
                continue  # said above
            if finding.store in by_store:
                by_store[finding.store].problems.append(finding.message)
            else:
                problems.append(finding.message if finding.store is None else f"[{finding.store}] {finding.message}")
    return VerifyResult(record, problems, checks, strict, allow_unreadable, additive, comparison)


def _verify_job(what: str, entry: StoreEntry, located: ondisk.Located, *check: bool) -> StoreCheck | Additive:
    """One store's check (`check`: canonical, strict, allow_unreadable, with its backup) or its
    additive proof."""
    if what == "additive":
        from .additive import check as prove_additive  # imported already (verify)

        return prove_additive(entry, located.target)
    canonical, strict, allow_unreadable, backup = check
    return verify_store(entry, located.target, canonical, strict, allow_unreadable, backup=backup)


def _paths(record: Manifest) -> set[str]:
    return {e.path for e in record.stores} | {e.resolved_path for e in record.stores if e.resolved_path}


def _pinned(entry: StoreEntry, *, allow_dangling: bool) -> ondisk.Located | str:
    """Where a manifest's store path leads now, or why it may not be followed (ondisk.pinned)."""
    try:
        return ondisk.pinned(entry.path, entry.resolved_path, "store path", allow_dangling=allow_dangling)
    except ondisk.UnsafeStorePath as exc:
        return exc.message


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
    newer = pending_runs(work, _paths(record), newer_than=os.path.basename(manifest_path))
    if newer:
        _refuse_rollback([f"a newer run did not complete: manifest {p.path} is pending; roll it back first, "
                          "or run the backfill, which recovers it" for p in newer])
    backup_dir = work.backup_dir(run_stamp)
    if os.path.lexists(backup_dir):
        workdir.require_trusted_dir(backup_dir, os.lstat(backup_dir), "backup directory")
    located = [_pinned(entry, allow_dangling=True) for entry in record.stores]
    unsafe = [f"[{e.store}] {found}" for e, found in zip(record.stores, located, strict=True) if isinstance(found, str)]
    if unsafe:
        _refuse_rollback(unsafe)
    found_at = [found for found in located if isinstance(found, ondisk.Located)]
    with interruptible(), locked([found.target for found in found_at], lock_timeout), \
            durable.held(found_at, create=True) as held:
        remove_leftovers(held, None)
        targets = {e.store: found.at for e, found in zip(record.stores, held, strict=True)}
        sizes = {e.store: ondisk.size_of(targets[e.store]) + ondisk.size_of(e.backup_path or "")
                 for e in record.stores}
        total = sum(sizes.values())

        def plan_one(entry: StoreEntry) -> tuple[RollbackAction, str | None]:
            planned = restore.plan(entry, targets[entry.store], force)
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
            workers.in_threads(lambda a: restore.apply(a, backup_dir, stamp, siblings), actions, total)
            advance(total)
        if record.status == PENDING:  # an interrupted run, now rolled back: the next run has nothing to recover
            recovery.mark_reverted(manifest_path, record)
    return RollbackResult(record, actions)


def _refuse_rollback(refusals: list[str]) -> NoReturn:
    for problem in refusals:
        log.error("rollback.refused", reason=problem)
    raise RollbackRefused("rollback refused, nothing was changed:\n  " + "\n  ".join(refusals))


@dataclass
class FileCheck:
    path: str
    kind: str
    report: validate.Report
    failure: str | None = None
    """Why the file as a whole cannot be read (not found, empty, does not parse), if it cannot."""


def check(kind_name: str, paths: list[str], *, limit: int = validate.DEFAULT_LIMIT) -> list[FileCheck]:
    """Can the service read each file as a store of `kind_name`? Reads only; writes nothing."""
    kind = store_kind(kind_name)
    results = []
    for path in paths:
        report = validate.Report(kind.name)
        snapshot = read_store(kind.name, path)
        failure = None
        if snapshot is None:
            failure = "not found"
        elif not snapshot.data:
            failure = "the file is empty (the service cannot parse it)"
        else:
            try:
                value = parsing.general(snapshot.data).tree
            except parsing.NotParsed as exc:
                failure = str(exc)
            else:
                report = validated(kind.name, path, value, jsonio.indent(snapshot.data), limit)
                duplicates.add_to(report, kind, snapshot.data, value, limit)
        if failure:
            report.unreadable, report.problems = 1, [validate.Problem("$", failure)]
            log.warning("store.validated", store=kind.name, path=path, readable=False, unreadable=1,
                        problems=[f"$: {failure}"])
        results.append(FileCheck(path, kind.name, report, failure))
    return results


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
    return leftover_temps(sorted(_paths(record)), WorkDir.of_manifest(manifest_path)[0].root)


def prune(settings: Settings, *, keep: int, dry_run: bool = False, lock_timeout: float = 30.0) -> PruneResult:
    """Remove old manifests and their backup directories, under the same lock as a run: never
    the newest `keep`, never one a store it changed still needs, never anything a run did not
    make, never through a link (retention.py has the rules)."""
    with locked([s.path for s in settings.stores], lock_timeout):
        return retention.prune(settings, keep, dry_run)
