"""One store made ready to be replaced: read, parsed, transformed, validated, encoded, and its new
bytes written (fsynced) to a temporary file beside it. Nothing is replaced here.

This is the heavy part of a run, so it is a plain function of picklable arguments that returns
a small picklable result (no store bytes): `workers.map_stores` runs it in worker processes when
the stores are big. Memory stays near the parsed tree of one store: the input bytes are dropped
once parsed, and the new bytes are laid out, hashed and written a few megabytes at a time
(jsonio.CanonicalPieces, durable.write_temp_stream).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from . import duplicates, durable, jsonio, ondisk, transform, typed, validate, workers
from .errors import StoreMigrateError, StoreRefused
from .logs import timed
from .manifest import StoreEntry
from .stores import StoreKind, store_kind

log = structlog.get_logger("store_migrate")


@dataclass(frozen=True)
class Known:
    """What an earlier complete run of the same transform recorded about a store's bytes."""

    after_sha256: str
    counts: dict[str, int]
    validation_problems: int
    manifest: str
    identity: dict[str, int] | None = None
    """The file's identity right after that run; the same identity now means the same bytes."""
    entry: StoreEntry | None = None
    """That run's manifest entry: where the store's bytes before the migration are kept."""


@dataclass
class PreparedStore:
    store: str
    path: str
    target: str
    """`path` with symlinks resolved (a link stays a link): what the manifest records."""
    at: str
    """`target` reached through its directory held open (durable.held): every read and write of
    the store uses it."""
    before: ondisk.FileState | None
    """The store file as it was read (its bytes are not kept); None when it did not exist."""
    after_sha256: str
    after_size: int
    temp: str | None
    """The new bytes, written and fsynced beside the target; None when nothing changes."""
    counts: dict[str, int]
    report: validate.Report
    added_keys: list[str] = field(default_factory=list)
    replaced_keys: list[str] = field(default_factory=list)
    counters: dict[str, tuple[Any, int]] = field(default_factory=dict)
    """Every counter of the kind: name -> (value before, value after); before is None when absent."""
    reused: str | None = None
    """The manifest whose record proved these bytes already migrated (nothing was parsed)."""
    origin: StoreEntry | None = None
    """With `reused`: that manifest's entry, whose before bytes (and backup) are this store's
    bytes before the migration; a new manifest carries them on, so that the newest manifest
    always rolls the whole migration back."""
    hashed: bool = True
    """False when the bytes were taken to be the recorded ones by the file's identity alone:
    the backup must then be a real copy of the file, whose read-back hash proves them."""

    @property
    def changed(self) -> bool:
        return self.before is None or self.before.sha256 != self.after_sha256

    def discard(self) -> None:
        """Remove the prepared temporary file (a run that stops before replacing this store)."""
        if self.temp is not None:
            durable.discard(self.temp)
            self.temp = None


Opened = TypeVar("Opened")


def _opened(store: str, path: str, read: Callable[[], Opened]) -> Opened:
    """`read()` with its errors told the operator's way."""
    try:
        return read()
    except IsADirectoryError:
        raise StoreMigrateError(
            f"[{store}] {path} is not a regular file", hint="point the store variable at the store's JSON file"
        ) from None
    except PermissionError as exc:
        raise StoreMigrateError(f"[{store}] cannot read {path}: {exc.strerror}") from None


def read_store(store: str, path: str, *, hash_in_background: bool = False) -> ondisk.Snapshot | None:
    """The store's bytes, or None when it does not exist; a clear error for anything else."""
    return _opened(store, path, lambda: ondisk.read_snapshot(path, hash_in_background=hash_in_background))


def map_store(store: str, path: str) -> ondisk.Mapped | None:
    """The store's pages mapped (ondisk.map_snapshot: in worker processes only), or None."""
    return _opened(store, path, lambda: ondisk.map_snapshot(path))


def parse(kind: StoreKind, path: str, data: bytes | memoryview) -> tuple[Any, bool]:
    """The store as typed.decode reads it and True; or None and False when it declines (the caller
    then parses in full, which also names what is wrong with bytes that are not JSON)."""
    if not data:
        return None, False
    try:
        return typed.decode(kind, data), True
    except typed.Declined as exc:
        log.info("store.general_path", store=kind.name, path=path, reason=str(exc))
        return None, False


def validated(
    store: str, path: str, value: object, indented: bytes | None, limit: int = validate.DEFAULT_LIMIT,
    *, typed: bool = False,
) -> validate.Report:
    """Validate a parsed store and log the verdict (pointers and reasons only, never values)."""
    with timed() as clock:
        report = validate.validate(store, value, indented, limit=limit, typed=typed)
    level = log.info if report.readable else log.warning
    level(
        "store.validated", store=store, path=path, readable=report.readable,
        unreadable=report.unreadable, problems=[f"{p.pointer}: {p.message}" for p in report.problems],
        typed=typed, **clock,
    )
    return report


def _refuse(before: ondisk.FileState | None, store: str, path: str, reason: str, position: str | None) -> StoreRefused:
    log.warning(
        "store.refused", store=store, path=path, reason=reason, position=position,
        bytes=None if before is None else before.size, sha256=None if before is None else before.sha256,
    )
    return StoreRefused(path, reason, position=position)


def refuse_holes(store: str, path: str, at: str) -> None:
    """Refuse a sparse store before anything copies or parses it (ondisk.first_hole)."""
    hole = ondisk.first_hole(at)
    if hole is not None:
        raise _refuse(None, store, path, "the file has holes (ranges that read as NUL bytes), so it is not JSON",
                      f"byte {hole}")


def prepare(
    store: str,
    path: str,
    target: str,
    *,
    at: str | None = None,
    siblings: tuple[str, ...] = (),
    allow_empty: bool = False,
    strict: bool = False,
    write: bool = True,
) -> PreparedStore:
    """Make one store ready. Raises StoreRefused (nothing written) when it cannot be migrated
    without losing data, or when `strict` and the service could not read a record of it.
    With `write` false (a dry run) the new bytes are measured but written nowhere. `target` is
    `path` with every link resolved (ondisk.locate), `at` the same file through its directory held
    open (durable.held, which created any missing directory; `target` when not given); `siblings`
    the other stores' `at` (a store the run creates takes its owner from one in its directory)."""
    kind = store_kind(store)
    at = target if at is None else at
    with timed() as clock:  # in a worker, the file's pages are mapped rather than copied
        snapshot = map_store(store, at) if workers.in_worker() else read_store(store, at, hash_in_background=True)
    data: bytes | memoryview = b"" if snapshot is None else snapshot.data
    with timed() as parse_clock:  # while a thread hashes the bytes
        value, typed_ok = parse(kind, path, data)
        members = duplicates.written(data)  # compared with the output's (duplicates.py)
    before = None if snapshot is None else snapshot.state
    log.info(
        "store.read", store=store, path=path, existed=before is not None,
        bytes=None if before is None else before.size, sha256=None if before is None else before.sha256, **clock,
    )
    size = len(data)
    if isinstance(snapshot, ondisk.Mapped):
        if not typed_ok:
            data = bytes(data)  # the general path, and its error positions, work on bytes
        snapshot.close()
    del snapshot
    if before is not None and not size and not allow_empty:
        raise _refuse(before, store, path, "the file is empty (pass --allow-empty to treat it as an empty store)", None)
    with timed() as clock:
        if not typed_ok:
            assert isinstance(data, bytes)
            try:
                value = jsonio.decode(data) if data else {}
            except jsonio.JsonError as exc:
                raise _refuse(before, store, path, exc.reason, exc.position(data)) from None
        del data
        top_level = len(value) if isinstance(value, dict) else 0
        try:
            result = transform.backfill(kind, value)
        except transform.ShapeRefusal as exc:
            raise _refuse(before, store, path, exc.reason, exc.pointer) from None
        members += len(result.value) - top_level  # the keys and counters the transform added
        counts = transform.counts(kind, result.value)
        counters = _counters(kind, result)
    report = validated(store, path, result.value, None, typed=typed_ok)
    if strict and not report.readable:
        first = report.problems[0]
        raise _refuse(
            before, store, path,
            f"the service could not read {report.unreadable} record(s) after migration (--strict); "
            f"first: {first.message}",
            first.pointer,
        )
    with timed() as encode_clock:
        pieces = jsonio.CanonicalPieces(result.value)
        digest = hashlib.sha256()
        temp = None
        if write:
            owned = ondisk.ownership_for_new(at, siblings) if before is None else before.ownership
            temp, size = durable.write_temp_stream(
                os.path.dirname(at), os.path.basename(at), pieces, owned.mode, owned.owner, digest,
                unless=None if before is None else before.sha256,
            )
        else:
            size = 0
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
        too_deep, colons = pieces.too_deep, pieces.colons
        workers.outlive(value)  # in a worker, never freed one by one (see workers.py)
        del value, result.value, pieces
        after_sha256 = digest.hexdigest()
    prepared = PreparedStore(
        store, path, target, at, before, after_sha256, size, temp, counts, report,
        result.added_keys, result.replaced_keys, counters,
    )
    if too_deep:
        prepared.discard()
        raise _refuse(before, store, path, f"nesting too deep to parse ({jsonio.MAX_DEPTH} levels or more)", None)
    if colons != members:  # a member named twice was dropped when parsing
        prepared.discard()
        raise _refuse(before, store, path, *duplicates.refusal(
            kind, at, None if before is None else before.sha256, colons, members))
    if not prepared.changed:
        prepared.discard()
    log.info(
        "store.transformed", store=store, path=path, changed=prepared.changed, added_keys=prepared.added_keys,
        replaced_keys=prepared.replaced_keys, counters={c.name: c.after for c in result.counters},
        counts=counts,
        bytes=size, sha256=after_sha256,
        duration_ms=parse_clock["duration_ms"] + clock["duration_ms"] + encode_clock["duration_ms"],
    )
    return prepared


def _counters(kind: StoreKind, result: transform.TransformResult) -> dict[str, tuple[Any, int]]:
    changed = {c.name: c for c in result.counters}
    return {
        c.name: (changed[c.name].before if c.name in changed else result.value[c.name], result.value[c.name])
        for c in kind.counters
    }


def check_known(
    store: str, path: str, target: str, known: Known, *, at: str | None = None, strict: bool = False,
    advance: Callable[[int], None] | None = None,
) -> PreparedStore | None:
    """A rerun's shortcut: hash the store (at `at`, as `prepare`) without holding it in memory;
    when the bytes are the ones `known` records, the store is already migrated and nothing needs
    parsing. None when the store must be prepared in full."""
    at = target if at is None else at
    try:
        st = os.lstat(at)
        identity = ondisk.FileIdentity.of(st)
        if known.identity is not None and identity.to_json() == known.identity and stat.S_ISREG(st.st_mode):
            before = ondisk.FileState.of(known.after_sha256, st)
            log.info("store.read", store=store, path=path, existed=True, bytes=st.st_size,
                     sha256=known.after_sha256, hashed=False)
            if advance is not None:
                advance(st.st_size)
            prepared = _already_migrated(store, path, target, at, before, known, strict)
            prepared.hashed = False
            return prepared
        with timed() as clock:
            sha256, size = ondisk.hash_file(at, advance)
        st_after = os.lstat(at)
    except FileNotFoundError:
        return None
    if sha256 != known.after_sha256 or ondisk.FileIdentity.of(st_after) != identity or not stat.S_ISREG(st.st_mode):
        return None
    before = ondisk.FileState.of(sha256, st)
    log.info("store.read", store=store, path=path, existed=True, bytes=size, sha256=sha256, **clock)
    return _already_migrated(store, path, target, at, before, known, strict)


def _already_migrated(
    store: str, path: str, target: str, at: str, before: ondisk.FileState, known: Known, strict: bool
) -> PreparedStore:
    """These exact bytes are the output of an earlier complete run of this transform: a fixed
    point, so nothing needs parsing; its counts and validation verdict are reused."""
    report = validate.Report(store, unreadable=known.validation_problems)
    if strict and not report.readable:
        raise _refuse(
            before, store, path,
            f"the service could not read {report.unreadable} record(s) (recorded in {known.manifest}; --strict)",
            None,
        )
    log.info("store.already_migrated", store=store, path=path, sha256=before.sha256, manifest=known.manifest)
    return PreparedStore(
        store, path, target, at, before, before.sha256, before.size, None, dict(known.counts), report,
        reused=known.manifest, origin=known.entry,
    )
