"""The commands: run, verify, rollback. One function each; they print nothing and exit nothing.

Each takes plain arguments, does the work through the library modules and returns a result the
CLI turns into the drop-in stdout lines. Operator mistakes and refusals raise StoreMigrateError.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from . import __version__, durable, jsonio, manifest, summary, transform, validate, workers
from .config import Settings
from .errors import (
    ConcurrentWrite,
    RollbackRefused,
    RunFailed,
    StoreMigrateError,
)
from .lock import locked
from .logs import timed
from .manifest import COMPLETE, PENDING, REVERTED, Manifest, StoreEntry
from .prepare import Known, PreparedStore, check_known, prepare, read_store, validated
from .progress import SILENT, Advance, Progress
from .stores import StoreKind, store_kind

log = structlog.get_logger("store_migrate")
Clock = Callable[[], datetime]


def describe_os_error(exc: OSError) -> str:
    """`<reason>: <file>` for an operating-system error, as an operator reads it."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


# --------------------------------------------------------------------------------------- run


@dataclass
class RunResult:
    manifest_path: str
    backup_dir: str
    manifest: Manifest
    stores: list[PreparedStore] = field(default_factory=list)


def _remove_leftovers(store_paths: list[str], work_dir: str | None) -> None:
    """Remove temporary files that a killed run or rollback left beside the stores (we hold their
    lock, which every writer of those holds) and in the work directory (shared with runs on other
    stores: only files whose writer is gone)."""
    places = [os.path.split(os.path.realpath(p)) for p in store_paths]
    removed = [
        temp for directory, name in places
        for temp in durable.remove_leftover_temps(directory, only_for=name, locked=True)
    ]
    if work_dir is not None:
        removed += durable.remove_leftover_temps(os.path.join(work_dir, "manifests"))
        backups = os.path.join(work_dir, "backups")
        for stamp in sorted(os.listdir(backups)) if os.path.isdir(backups) else ():
            removed += durable.remove_leftover_temps(os.path.join(backups, stamp))
    for path in removed:
        log.warning("temp.removed", path=path)


def _holds(path: str, sha256: str) -> bool:
    """Whether `path` holds exactly the bytes with this hash (used on failure paths only)."""
    try:
        return durable.hash_file(path)[0] == sha256
    except OSError:
        return False


def _known_results(settings: Settings) -> dict[str, Known]:
    """What the newest complete manifest written by this very transform proves about each store
    path: bytes with its after_sha256 are already migrated and need no parsing."""
    if not os.path.isdir(settings.manifests_dir):
        return {}
    for name in sorted(os.listdir(settings.manifests_dir), reverse=True):
        if not name.endswith(".json"):
            continue
        path = os.path.join(settings.manifests_dir, name)
        try:
            record = manifest.load(path)
        except StoreMigrateError as exc:
            log.warning("manifest.skipped", path=path, reason=exc.message)
            continue
        if not record.complete:
            continue
        if record.transform_version != transform.TRANSFORM_VERSION or record.tool_version != __version__:
            return {}
        return {
            e.path: Known(e.after_sha256, e.counts, e.validation_problems or 0, path, e.after_identity)
            for e in record.stores
            if e.validation_problems is not None
        }
    return {}


def _reserve_stamp(settings: Settings, clock: Clock) -> tuple[datetime, str]:
    """A timestamp no other run in this work directory has, and its new backup directory.

    Names sort by time, so two runs in the same second cannot share one: the second waits for
    the next second. The backup directory is created exclusively, which is the reservation.
    """
    durable.ensure_dir(settings.manifests_dir)
    durable.ensure_dir(settings.backups_root)
    while True:
        moment = clock()
        stamp = _stamp(moment)
        taken = os.path.exists(os.path.join(settings.manifests_dir, f"{stamp}.json"))
        backup_dir = os.path.join(settings.backups_root, stamp)
        if not taken and durable.make_new_dir(backup_dir):
            return moment, backup_dir
        time.sleep(max(0.01, 1 - moment.microsecond / 1e6))


def _identical_backup(backups_root: str, store: str, sha256: str, exclude: str) -> str | None:
    """An earlier backup holding exactly these bytes (checked by hash), newest first."""
    suffix = f"-{sha256[:12]}.bak.json"
    for stamp in sorted(os.listdir(backups_root), reverse=True):
        directory = os.path.join(backups_root, stamp)
        if directory == exclude or not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name.startswith(f"{store}-") and name.endswith(suffix):
                candidate = os.path.join(directory, name)
                if _holds(candidate, sha256):
                    return candidate
    return None


def _write_backup(prepared: PreparedStore, stamp: str, backup_dir: str, advance: Advance) -> str | None:
    """Back up one store (a hard link when an identical backup exists) and read it back."""
    before = prepared.before
    if before is None:
        return None
    path = os.path.join(backup_dir, f"{prepared.store}-{stamp}-{before.sha256[:12]}.bak.json")
    with timed() as clock:
        same = None
        if prepared.hashed:  # else only a copy of the file itself proves its bytes
            same = _identical_backup(os.path.dirname(backup_dir), prepared.store, before.sha256, backup_dir)
        if same is not None:
            durable.link_new(same, path)
            advance(before.size)
        else:
            durable.copy_new(prepared.target, path, advance=advance)
        written, size = durable.hash_file(path, advance)
    if written != before.sha256:
        raise ConcurrentWrite(
            f"[{prepared.store}] {prepared.path} changed on disk while the run worked: its backup reads "
            f"back with sha256 {written}, expected {before.sha256}; no store was changed",
            hint="stop the service's writers or wait, then rerun",
        )
    log.info("backup.written", store=prepared.store, path=path, bytes=size, sha256=written,
             linked_to=same, **clock)
    return path


def _replace(prepared: PreparedStore) -> durable.FileIdentity | None:
    """Rename the prepared new bytes over one store, unless it changed since it was read."""
    expected = None if prepared.before is None else prepared.before.identity
    if durable.identity(prepared.target) != expected:
        raise ConcurrentWrite(
            f"[{prepared.store}] {prepared.path} changed on disk while the run worked "
            "(is the service still writing it?)",
            hint="stop the service's writers or wait, then rerun; the newer data was kept",
        )
    assert prepared.temp is not None
    with timed() as clock:
        temp, prepared.temp = prepared.temp, None
        durable.commit_temp(temp, prepared.target)
    log.info("store.replaced", store=prepared.store, path=prepared.path, bytes=prepared.after_size,
             sha256=prepared.after_sha256, **clock)
    return durable.identity(prepared.target)


Replaced = list[tuple[PreparedStore, durable.FileIdentity | None, str | None]]
"""Stores this run replaced: the store, the identity of our new file, and its backup."""


def _put_back(replaced: Replaced) -> list[str]:
    """Return replaced stores to their old bytes (from their backups); what could not be."""
    failures = []
    for prepared, ours, backup in reversed(replaced):
        try:
            if durable.identity(prepared.target) != ours:
                failures.append(f"{prepared.path} (changed again since this run replaced it)")
                continue
            if prepared.before is None:
                durable.remove(prepared.target)
            else:
                assert backup is not None
                saved = durable.read_snapshot(backup)
                if saved is None or saved.sha256 != prepared.before.sha256:
                    failures.append(f"{prepared.path} (its backup {backup} does not hold the old bytes)")
                    continue
                durable.atomic_replace(prepared.target, saved.data, mode=prepared.before.mode)
            log.info("store.put_back", store=prepared.store, path=prepared.path)
        except OSError as exc:
            failures.append(f"{prepared.path} ({exc.strerror})")
    return failures


def _prepare_all(
    settings: Settings,
    allow_empty: bool,
    strict: bool,
    known: dict[str, Known],
    progress: Progress,
    write: bool = True,
) -> list[PreparedStore]:
    """Prepare every store (in parallel when big); if any cannot be, discard what the others
    prepared and raise the first failure in store order."""
    sizes = [durable.size_of(os.path.realpath(s.path)) for s in settings.stores]
    known_bytes = sum(size for s, size in zip(settings.stores, sizes, strict=True) if s.path in known)
    with progress.task("hashing stores", known_bytes) as advance:
        shortcuts = workers.in_threads(
            lambda s: check_known(s.kind, s.path, known[s.path], strict=strict, advance=advance)
            if s.path in known else None,
            settings.stores, sum(sizes),
        )
    rest = [i for i, done in enumerate(shortcuts) if done is None]
    jobs = [(settings.stores[i].kind, settings.stores[i].path, allow_empty, strict, write) for i in rest]
    with progress.task(f"parsing, checking and encoding {len(rest)} store(s)", sum(sizes[i] for i in rest)) as advance:
        full = workers.map_stores(_prepare_job, jobs, [sizes[i] for i in rest],
                                  on_done=lambda j: advance(sizes[rest[j]]))
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


def _prepare_job(store: str, path: str, allow_empty: bool, strict: bool, write: bool) -> PreparedStore:
    return prepare(store, path, allow_empty=allow_empty, strict=strict, write=write)


def run(
    settings: Settings,
    *,
    allow_empty: bool = False,
    strict: bool = False,
    lock_timeout: float = 30.0,
    clock: Clock = _utc_now,
    progress: Progress = SILENT,
) -> RunResult:
    """Backfill every store: prepare all, back up all, write a pending manifest, replace, complete."""
    paths = [s.path for s in settings.stores]
    with locked(paths, lock_timeout):
        _remove_leftovers(paths, settings.work_dir)
        prepared = _prepare_all(settings, allow_empty, strict, _known_results(settings), progress)
        try:
            return _backup_and_replace(settings, prepared, clock, progress)
        finally:
            for p in prepared:
                p.discard()


def dry_run(
    settings: Settings, *, allow_empty: bool = False, strict: bool = False, progress: Progress = SILENT
) -> list[PreparedStore]:
    """Everything a run does but write: each store read, checked, transformed, validated and
    encoded in memory. Refuses exactly as a run would. Leaves no file behind (no backup, manifest
    or temporary file; the lock is a kernel lock on the directory, not a file)."""
    prepared = _prepare_all(settings, allow_empty, strict, _known_results(settings), progress, write=False)
    log.info("run.dry", stores=[p.store for p in prepared], would_change=[p.store for p in prepared if p.changed])
    return prepared


def _backup_and_replace(
    settings: Settings, prepared: list[PreparedStore], clock: Clock, progress: Progress
) -> RunResult:
    moment, backup_dir = _reserve_stamp(settings, clock)
    stamp = _stamp(moment)
    total = sum(p.before.size for p in prepared if p.before)
    with progress.task("backing up and reading back", 2 * total) as advance:
        backups = workers.in_threads(lambda p: _write_backup(p, stamp, backup_dir, advance), prepared, total)
    entries = [
        StoreEntry(
            store=p.store,
            path=p.path,
            existed=p.before is not None,
            backup_path=backup,
            before_sha256=None if p.before is None else p.before.sha256,
            after_sha256=p.after_sha256,
            changed=p.changed,
            counts=p.counts,
            validation_problems=p.report.unreadable,
        )
        for p, backup in zip(prepared, backups, strict=True)
    ]
    record = Manifest(
        generated_at=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        stores=entries,
        status=PENDING,
        tool_version=__version__,
        transform_version=transform.TRANSFORM_VERSION,
        backup_dir=backup_dir,
    )
    manifest_path = os.path.join(settings.manifests_dir, f"{stamp}.json")
    durable.create_new(manifest_path, record.to_bytes())
    log.info("manifest.written", path=manifest_path, status=PENDING)
    replaced: Replaced = []
    try:
        for p, backup in zip(prepared, backups, strict=True):
            if not p.changed:
                log.info("store.unchanged", store=p.store, path=p.path, sha256=p.after_sha256)
                continue
            try:
                replaced.append((p, _replace(p), backup))
            except (OSError, StoreMigrateError):
                # A failure after the rename (fsync of the directory) leaves our bytes in place.
                if _holds(p.target, p.after_sha256):
                    replaced.append((p, durable.identity(p.target), backup))
                raise
    except (OSError, StoreMigrateError) as exc:
        raise _fail(record, manifest_path, replaced, exc) from exc
    record.status = COMPLETE
    record.stores = _with_identities(record.stores, prepared, replaced)
    try:
        durable.atomic_replace(manifest_path, record.to_bytes())
    except OSError as exc:
        raise RunFailed(
            f"every store was migrated, but manifest {manifest_path} could not be marked complete: "
            f"{describe_os_error(exc)}",
            hint="rerun the backfill (nothing will change and a complete manifest is written), "
            f"or roll back with {manifest_path}",
        ) from exc
    log.info("manifest.written", path=manifest_path, status=COMPLETE)
    return RunResult(manifest_path, backup_dir, record, prepared)


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
    if isinstance(exc, ConcurrentWrite):
        exc.message += f"; stores this run had replaced were put back (manifest {manifest_path})"
        return exc
    return RunFailed(
        f"run failed: {cause}; every store holds its pre-run bytes again",
        hint=f"manifest {manifest_path} is marked reverted; fix the cause and rerun",
    )


# ------------------------------------------------------------------------------------ verify


@dataclass
class StoreCheck:
    store: str
    path: str
    problems: list[str] = field(default_factory=list)
    """Each problem is one message; continuation lines start with two spaces."""
    report: validate.Report | None = None
    """Can the service read the live file? (None when it could not be parsed at all.)"""
    live_sha256: str | None = None
    backup_ok: bool | None = None
    """Whether the backup exists and hashes to before_sha256 (None: the store did not exist)."""

    def failed(self, strict: bool) -> bool:
        return bool(self.problems) or (strict and self.report is not None and not self.report.readable)


@dataclass
class VerifyResult:
    manifest: Manifest
    problems: list[str]
    """Problems with the manifest itself (for example a run that did not complete)."""
    stores: list[StoreCheck]
    strict: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.failed(self.strict) for s in self.stores)


def _sha_problem(what: str, expected: str | None, actual: str) -> str:
    return f"{what}\n  expected: {expected}\n  actual:   {actual}"


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
        outcomes = workers.map_stores(_verify_store, jobs, sizes, on_done=lambda i: advance(sizes[i]))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        checks.append(outcome)
    if earlier is not None:
        assert baseline is not None
        before = {e.store: e.counts for e in earlier.stores}
        for entry, check in zip(record.stores, checks, strict=True):
            check.problems.extend(_drops(before.get(entry.store, {}), entry.counts, baseline, max_drop))
    return VerifyResult(record, problems, checks, strict)


def _drops(baseline: dict[str, int], now: dict[str, int], source: str, max_drop: int) -> list[str]:
    """The runbook's "unexpected data drops": counts that fell by more than `max_drop`."""
    return [
        f"count {name} dropped by {old - now[name]} against baseline {source} "
        f"({old} -> {now[name]}; --max-drop {max_drop})"
        for name, old in sorted(baseline.items())
        if name in now and old - now[name] > max_drop
    ]


def _verify_store(entry: StoreEntry, canonical: bool, strict: bool) -> StoreCheck:
    """Verify one store (in a worker process when the stores are big)."""
    with timed() as clock:
        check, live = _check_store(entry, canonical, strict)
    log.info(
        "store.verified", store=entry.store, path=entry.path, ok=not check.problems,
        problems=len(check.problems), sha256=None if live is None else live[0],
        bytes=None if live is None else live[1], **clock,
    )
    return check


def _check_store(entry: StoreEntry, canonical: bool, strict: bool) -> tuple[StoreCheck, tuple[str, int] | None]:
    """Checksum, shape, counts, backup and service readability of one store.

    When the bytes are exactly those the manifest records and the run recorded its validation
    verdict, shape and counts come from `summary` (no full parse) and the verdict is the recorded
    one; `strict` always parses and validates in full."""
    check = StoreCheck(entry.store, entry.path)
    kind = store_kind(entry.store)
    with ThreadPoolExecutor(max_workers=1) as background:  # hashing the backup releases the GIL
        backup = background.submit(_backup_problems, entry) if entry.existed else None
        try:
            live = read_store(entry.store, entry.path)
        except StoreMigrateError as exc:
            check.problems.append(exc.message)
            live = None
        else:
            _check_live(check, kind, entry, live, canonical, strict)
            check.live_sha256 = None if live is None else live.sha256
        if backup is not None:
            backup_problems = backup.result()
            check.backup_ok = not backup_problems
            check.problems.extend(backup_problems)
    return check, None if live is None else (live.sha256, len(live.data))


def _check_live(
    check: StoreCheck, kind: StoreKind, entry: StoreEntry, live: durable.Snapshot | None, canonical: bool, strict: bool
) -> None:
    if live is None:
        check.problems.append(f"store file missing: {entry.path}")
    elif live.sha256 != entry.after_sha256:
        check.problems.append(_sha_problem("sha mismatch", entry.after_sha256, live.sha256))
    quick = None
    if live is not None and not strict and entry.validation_problems is not None and live.sha256 == entry.after_sha256:
        quick = summary.summarize(kind, live.data)
    if quick is not None:
        check.problems.extend(f"shape: {p}" for p in quick.shape_problems)
        check.problems.extend(_count_problems(entry.counts, quick.counts))
        check.report = validate.Report(entry.store, unreadable=entry.validation_problems or 0)
    elif live is not None:
        try:
            value = jsonio.decode(live.data)
        except jsonio.JsonError as exc:
            where = exc.position(live.data)
            check.problems.append(f"does not parse: {exc.reason}" + (f" at {where}" if where else ""))
        else:
            check.problems.extend(f"shape: {p}" for p in transform.shape_problems(kind, value))
            # This tool writes canonical (indented) bytes; anything else is indented first so the
            # nesting rule sees every level.
            as_written = canonical and live.sha256 == entry.after_sha256
            indented = live.data if as_written else jsonio.indent(live.data)
            check.report = validated(entry.store, entry.path, value, indented)
            if isinstance(value, dict):
                check.problems.extend(_count_problems(entry.counts, transform.counts(kind, value)))
            workers.outlive(value)


def _count_problems(recorded: dict[str, int], actual: dict[str, int]) -> list[str]:
    return [
        f"count {name}: manifest has {recorded.get(name)}, file has {actual.get(name)}"
        for name in sorted(set(actual) | set(recorded))
        if actual.get(name) != recorded.get(name)
    ]


def _backup_problems(entry: StoreEntry) -> list[str]:
    assert entry.backup_path is not None
    try:
        digest, _ = durable.hash_file(entry.backup_path)
    except FileNotFoundError:
        return [f"backup missing: {entry.backup_path}"]
    except OSError as exc:
        return [f"backup unreadable: {entry.backup_path} ({exc.strerror})"]
    if digest != entry.before_sha256:
        return [_sha_problem(f"backup sha mismatch: {entry.backup_path}", entry.before_sha256, digest)]
    return []


# ---------------------------------------------------------------------------------- rollback


@dataclass
class RollbackAction:
    store: str
    path: str
    action: str
    """`restored`, `removed` or `skipped`: also the word the CLI prints."""
    reason: str = ""
    backup: durable.Snapshot | None = None
    live: durable.Snapshot | None = None
    forced: bool = False
    """The live file matched neither hash and --force was given: keep a copy first."""
    kept_as: str | None = None
    """Where a drifted live file was kept before a forced rollback replaced or removed it."""


@dataclass
class RollbackResult:
    manifest: Manifest
    actions: list[RollbackAction]


def _read_backup(entry: StoreEntry) -> tuple[durable.Snapshot | None, str | None]:
    assert entry.backup_path is not None
    try:
        backup = durable.read_snapshot(entry.backup_path)
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


def _plan(entry: StoreEntry, force: bool) -> tuple[RollbackAction, str | None]:
    """What rollback would do for one store, or why it must not."""
    live = read_store(entry.store, os.path.realpath(entry.path))
    action = RollbackAction(entry.store, entry.path, "skipped", live=live)
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
    kept = os.path.join(directory, f"{action.store}-{stamp}-{action.live.sha256[:12]}.pre-rollback.json")
    durable.ensure_dir(directory)
    if not os.path.exists(kept):
        durable.create_new(kept, action.live.data)
    digest, _ = durable.hash_file(kept)
    if digest != action.live.sha256:
        raise RollbackRefused(f"[{action.store}] copy {kept} of the newer file does not read back intact")
    action.kept_as = kept
    log.warning("store.kept_before_rollback", store=action.store, path=action.path, kept_as=kept, sha256=digest)


def _pre_rollback_dir(record: Manifest, manifest_path: str) -> str:
    if record.backup_dir:
        return record.backup_dir
    for entry in record.stores:
        if entry.backup_path:
            return os.path.dirname(entry.backup_path)
    manifests_dir = os.path.dirname(os.path.abspath(manifest_path))
    stem = os.path.splitext(os.path.basename(manifest_path))[0]
    return os.path.join(os.path.dirname(manifests_dir), "backups", stem)


def rollback(
    manifest_path: str,
    *,
    force: bool = False,
    lock_timeout: float = 30.0,
    clock: Clock = _utc_now,
    progress: Progress = SILENT,
) -> RollbackResult:
    """Return every store of a manifest to its before_sha256 state; check all before changing any."""
    record = manifest.load(manifest_path)
    with locked([e.path for e in record.stores], lock_timeout):
        _remove_leftovers([e.path for e in record.stores], None)
        sizes = {e.store: durable.size_of(e.path) + durable.size_of(e.backup_path or "") for e in record.stores}
        total = sum(sizes.values())

        def plan(entry: StoreEntry) -> tuple[RollbackAction, str | None]:
            planned = _plan(entry, force)
            advance(sizes[entry.store])
            return planned

        with progress.task("checking backups and live stores", total) as advance:
            planned = workers.in_threads(plan, record.stores, total)
        refusals = [problem for _, problem in planned if problem]
        if refusals:
            for problem in refusals:
                log.error("rollback.refused", reason=problem)
            raise RollbackRefused("rollback refused, nothing was changed:\n  " + "\n  ".join(refusals))
        actions = [action for action, _ in planned]
        stamp = _stamp(clock())
        with progress.task("restoring", total) as advance:
            workers.in_threads(lambda a: _apply(a, record, manifest_path, stamp), actions, total)
            advance(total)
    return RollbackResult(record, actions)


def _apply(action: RollbackAction, record: Manifest, manifest_path: str, stamp: str) -> None:
    if action.action == "skipped":
        log.info("store.skipped", store=action.store, path=action.path, reason=action.reason)
        return
    target = os.path.realpath(action.path)
    expected = None if action.live is None else action.live.identity
    if durable.identity(target) != expected:
        raise ConcurrentWrite(
            f"[{action.store}] {action.path} changed on disk during the rollback",
            hint="stop the service's writers, then rerun the rollback (it is safe to rerun)",
        )
    if action.forced:
        _keep_drifted(action, _pre_rollback_dir(record, manifest_path), stamp)
    with timed() as clock:
        if action.action == "removed":
            durable.remove(target)
        else:
            assert action.backup is not None
            live = action.live
            mode = live.mode if live is not None else durable.FILE_MODE
            owner = None
            if live is not None and (live.uid, live.gid) != (os.geteuid(), os.getegid()):
                owner = (live.uid, live.gid)
            if live is None:
                durable.ensure_dir(os.path.dirname(target))
            durable.atomic_replace(target, action.backup.data, mode=mode, owner=owner)
    log.info(
        f"store.{action.action}", store=action.store, path=action.path,
        sha256=None if action.backup is None else action.backup.sha256, **clock,
    )


# ------------------------------------------------------------------------------------- check


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
        if failure:
            report.unreadable, report.problems = 1, [validate.Problem("$", failure)]
            log.warning("store.validated", store=kind.name, path=path, readable=False, unreadable=1,
                        problems=[f"$: {failure}"])
        results.append(FileCheck(path, kind.name, report))
    return results


# ------------------------------------------------------------------------------------- prune


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
                for leftover in os.listdir(backups):
                    durable.remove(os.path.join(backups, leftover))
                os.rmdir(backups)
                durable.fsync_dir(settings.backups_root)
        log.info("manifest.pruned", path=path, backups=backups, dry_run=dry_run)
        result.removed += [path, backups]
    return result
