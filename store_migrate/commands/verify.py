"""The checks verify makes on one store: checksum, shape, counts, backup, service readability
(count drops against a baseline: compare.py; nothing lost or changed: additive.py).

Records the service cannot read fail a store unless the operator allows them
(`allow_unreadable`): the run's recorded verdict is trusted when the bytes are the recorded ones,
but a recorded count above zero is not enough to act on, so that store is then parsed and
validated to list the first problems. A file this user may not read is a problem of its own
(`StoreCheck.denied`): a permission, not a reason to roll back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from store_migrate.commands.prepare import map_store, parse, read_store, validated
from store_migrate.core import access, transform
from store_migrate.core.manifest import Manifest, StoreEntry
from store_migrate.core.stores import StoreKind, store_kind
from store_migrate.errors import StoreMigrateError
from store_migrate.fs import ondisk, workers
from store_migrate.logs import timed
from store_migrate.readable import duplicates, jsonio, summary, validate

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
    parsed = parse(kind, entry.path, live.data) if live is not None and strict else None
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
        value, typed_ok = parsed or parse(kind, entry.path, data)
        try:
            if not typed_ok:
                value = jsonio.decode(data)
        except jsonio.JsonError as exc:
            where = exc.position(data)
            check.problems.append(f"does not parse: {exc.reason}" + (f" at {where}" if where else ""))
        else:
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
