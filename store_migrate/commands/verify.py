"""`verify`, and the checks it makes on one store: checksum, shape, counts, backup, service readability
(count drops against a baseline: compare.py; nothing lost or changed: additive.py).

Records the service cannot read fail a store unless the operator allows them
(`allow_unreadable`): the run's recorded verdict is trusted when the bytes are the recorded ones,
but a recorded count above zero is not enough to act on, so that store is then parsed and
validated to list the first problems. A file this user may not read is a problem of its own
(`StoreCheck.denied`): a permission, not a reason to roll back."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from store_migrate.commands import compare, recovery
from store_migrate.commands.prepare import map_store, read_store, validated
from store_migrate.core import access, manifest, transform
from store_migrate.core.manifest import REVERTED, Manifest, StoreEntry
from store_migrate.core.progress import SILENT, Progress
from store_migrate.core.stores import StoreKind, store_kind
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import StoreMigrateError
from store_migrate.fs import ondisk, workers
from store_migrate.logs import timed
from store_migrate.readable import duplicates, jsonio, parsing, summary, validate

if TYPE_CHECKING:
    from store_migrate.commands.additive import Additive
    from store_migrate.commands.compare import Comparison

log = structlog.get_logger("store_migrate")


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
    denied: list[str] = field(default_factory=list)
    """The problems (also in `problems`) that are this user's permissions, not the store's bytes."""
    unreadable_allowed: bool = False
    """Records the service cannot read are a warning, not a failure (--allow-unreadable)."""
    additive: Additive | None = None
    """With `verify --additive`: whether the live store holds everything the backup held."""

    @property
    def unreadable(self) -> bool:
        """Whether the service cannot read some record of the live store."""
        return self.report is not None and not self.report.readable

    def failed(self) -> bool:
        return (bool(self.problems) or (self.unreadable and not self.unreadable_allowed)
                or (self.additive is not None and not self.additive.ok))


@dataclass
class VerifyResult:
    manifest: Manifest
    problems: list[str]
    """Problems with the manifest itself (for example a run that did not complete)."""
    stores: list[StoreCheck]
    strict: bool = False
    allow_unreadable: bool = False
    additive: bool = False
    """Whether every store was also proven additive (`verify --additive`)."""
    comparison: Comparison | None = None
    """With `verify --baseline`: the baseline against this manifest; its findings are among the
    problems too."""

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.failed() for s in self.stores)

    @property
    def only_denied(self) -> bool:
        """Whether every failure is a permission of the user running verify (so no reason to
        roll back: rerun verify as a user who may read the files)."""
        failing = [s for s in self.stores if s.failed()]
        return bool(failing) and not self.problems and all(
            s.problems and set(s.problems) <= set(s.denied) and not (s.unreadable and not s.unreadable_allowed)
            for s in failing
        )


def _sha_problem(what: str, expected: str | None, actual: str) -> str:
    return f"{what}\n  expected: {expected}\n  actual:   {actual}"


def verify_store(
    entry: StoreEntry, target: str, canonical: bool, strict: bool, allow_unreadable: bool = False,
    *, backup: bool = True,
) -> StoreCheck:
    """Verify one store (in a worker process when the stores are big); `target` is its path with
    every link resolved (ondisk.pinned). Not `backup`: the backup is left to `settle_backup`, with
    the hash of it that `verify --additive`'s proof computes anyway (its log event says so)."""
    with timed() as clock:
        check, live = _check_store(entry, target, canonical, strict, allow_unreadable, backup)
        check.unreadable_allowed = allow_unreadable
    leaves = {} if backup or not entry.existed else {"backup": "checked with the additive proof's hash"}
    log.info(
        "store.verified", store=entry.store, path=entry.path, ok=not check.failed(),
        problems=len(check.problems), unreadable=None if check.report is None else check.report.unreadable,
        sha256=None if live is None else live[0],
        bytes=None if live is None else live[1], **leaves, **clock,
    )
    return check


def settle_backup(check: StoreCheck, entry: StoreEntry, digest: str | None) -> None:
    """The backup's problems for a check made without them (`verify_store(backup=False)`), from
    `digest`, the hash of the backup's bytes that the additive proof read; when it read none,
    the backup is checked here as `verify_store` would have."""
    if not entry.existed:
        return
    if digest is None:
        problems, denied = _backup_problems(entry)
    elif digest != entry.before_sha256:
        assert entry.backup_path is not None
        problems, denied = [_sha_problem(f"backup sha mismatch: {entry.backup_path}", entry.before_sha256, digest)], []
    else:
        problems, denied = [], []
    check.backup_ok = not problems
    check.problems.extend(problems)
    check.denied.extend(denied)


def _check_store(
    entry: StoreEntry, target: str, canonical: bool, strict: bool, allow_unreadable: bool, with_backup: bool
) -> tuple[StoreCheck, tuple[str, int] | None]:
    """Checksum, shape, counts, backup and service readability of one store.

    When the bytes are exactly those the manifest records and the run recorded its validation
    verdict, shape and counts come from `summary` (no full parse) and the verdict is the recorded
    one (a store with recorded unreadable records is parsed in full to list them, unless they are
    allowed); `strict` always parses and validates in full."""
    check = StoreCheck(entry.store, entry.path)
    kind = store_kind(entry.store)
    with ThreadPoolExecutor(max_workers=1) as background:  # hashing the backup releases the GIL
        backup = background.submit(_backup_problems, entry) if entry.existed and with_backup else None
        live, measured = None, None
        denied = access.read_problem(target)
        if denied is not None:
            check.problems.append(denied)
            check.denied.append(denied)
        else:
            try:
                live = _read_live(entry.store, target, strict)
            except StoreMigrateError as exc:
                check.problems.append(exc.message)
            else:
                try:
                    _check_live(check, kind, entry, live, canonical, strict, allow_unreadable)
                    check.live_sha256 = None if live is None else live.sha256
                    measured = None if live is None else (live.sha256, len(live.data))
                finally:
                    if isinstance(live, ondisk.Mapped):
                        live.close()
        if backup is not None:
            backup_problems, backup_denied = backup.result()
            check.backup_ok = not backup_problems
            check.problems.extend(backup_problems)
            check.denied.extend(backup_denied)
    return check, measured


def _read_live(store: str, target: str, strict: bool) -> ondisk.Snapshot | ondisk.Mapped | None:
    """The live file: in a worker its pages mapped (no copy: 0.1-0.15 s less for a 240 MB store)
    and hashed by a thread while its summary is taken; `strict` parses it in full, from a copy
    hashed by a thread meanwhile; in this process (small stores) a copy."""
    if strict or not workers.in_worker():
        return read_store(store, target, hash_in_background=strict)
    return map_store(store, target)


def _check_live(
    check: StoreCheck, kind: StoreKind, entry: StoreEntry, live: ondisk.Snapshot | ondisk.Mapped | None,
    canonical: bool, strict: bool, allow_unreadable: bool,
) -> None:
    # --strict parses in full anyway: start while a thread hashes the bytes
    one_pass = parsing.one_pass(kind, entry.path, live.data) if live is not None and strict else None
    recorded = entry.validation_problems
    # The recorded verdict may stand (else the store is parsed in full below, to list the problems):
    # the summary is taken while a thread hashes the bytes, and used only if they are the recorded ones.
    summarized = summary.summarize(kind, live.data) if live is not None and not strict and recorded is not None and (
        recorded == 0 or allow_unreadable) else None
    if live is None:
        check.problems.append(f"store file missing: {entry.path}")
    elif live.sha256 != entry.after_sha256:
        check.problems.append(_sha_problem("sha mismatch", entry.after_sha256, live.sha256))
    quick = summarized if live is not None and live.sha256 == entry.after_sha256 else None
    if quick is not None:
        check.problems.extend(f"shape: {p}" for p in quick.shape_problems)
        check.problems.extend(_count_problems(entry.counts, quick.counts))
        check.report = validate.Report(entry.store, unreadable=entry.validation_problems or 0)
    elif live is not None:
        data = live.data if isinstance(live.data, bytes) else bytes(live.data)  # a map: parsed from a copy
        if not strict:  # else tried above, while a thread hashed the bytes
            one_pass = parsing.one_pass(kind, entry.path, data)
        try:
            parsed = one_pass or parsing.general(data)
        except parsing.NotParsed as exc:
            check.problems.append(str(exc))
        else:
            value, typed_ok = parsed.tree, parsed.typed
            check.problems.extend(f"shape: {p}" for p in transform.shape_problems(kind, value))
            # This tool writes canonical (indented) bytes; anything else is indented first so the
            # nesting rule sees every level.
            as_written = canonical and live.sha256 == entry.after_sha256
            indented = data if as_written else jsonio.indent(data)
            check.report = validated(entry.store, entry.path, value, indented, typed=typed_ok)
            if not as_written:  # this tool encodes a parsed tree, which cannot name a member twice
                duplicates.add_to(check.report, kind, data, value)
            if isinstance(value, dict):
                check.problems.extend(_count_problems(entry.counts, transform.counts(kind, value)))
            workers.outlive(value)


def _count_problems(recorded: dict[str, int], actual: dict[str, int]) -> list[str]:
    return [
        f"count {name}: manifest has {recorded.get(name)}, file has {actual.get(name)}"
        for name in sorted(set(actual) | set(recorded))
        if actual.get(name) != recorded.get(name)
    ]


def _backup_problems(entry: StoreEntry) -> tuple[list[str], list[str]]:
    """The backup's problems, and those of them that are the user's permissions."""
    assert entry.backup_path is not None
    denied = access.read_problem(entry.backup_path)
    if denied is not None:
        return [f"backup unreadable: {denied}"], [f"backup unreadable: {denied}"]
    try:
        digest, _ = ondisk.hash_file(entry.backup_path)
    except FileNotFoundError:
        return [f"backup missing: {entry.backup_path}"], []
    except OSError as exc:
        return [f"backup unreadable: {entry.backup_path} ({exc.strerror})"], []
    if digest != entry.before_sha256:
        return [_sha_problem(f"backup sha mismatch: {entry.backup_path}", entry.before_sha256, digest)], []
    return [], []


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
    newer_runs = recovery.pending_runs(work, manifest.covered_paths(record), newer_than=os.path.basename(manifest_path))
    for newer in newer_runs:
        problems.append(
            f"a newer run did not complete: manifest {newer.path} is pending; rerun the backfill (which "
            "recovers it) or roll it back, then verify the newest manifest"
        )
    canonical = record.transform_version is not None
    located = [ondisk.pinned_or_reason(entry.path, entry.resolved_path, allow_dangling=True) for entry in record.stores]
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
