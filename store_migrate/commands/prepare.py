"""One store made ready to be replaced: read, parsed, transformed, validated, encoded, and its new
bytes written (fsynced) to a temporary file beside it. Nothing is replaced here.

This is the heavy part of a run, so it is a plain function of picklable arguments that returns
a small picklable result (no store bytes): `workers.forked` runs it in worker processes when
the stores are big (backfill.prepare_all). Memory stays near the parsed tree of one store: the
input bytes are let go once parsed (the Memory section below), and the new bytes are laid out,
hashed and written a few megabytes at a time (jsonio.CanonicalPieces, durable.write_temp_stream).

`prepare` reads as its steps: read, decode (parsing.py: the one-pass typed decode, else the
general parse), transform, validate, encode, release.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from store_migrate.core import transform
from store_migrate.core.manifest import StoreEntry
from store_migrate.core.stores import StoreKind, store_kind
from store_migrate.errors import StoreMigrateError, StoreRefused
from store_migrate.fs import durable, ondisk, workers
from store_migrate.logs import timed
from store_migrate.readable import duplicates, jsonio, parsing, validate

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


HOLES = "the file has holes (ranges that read as NUL bytes), so it is not JSON"
"""Why a sparse store is refused before anything copies, reads or parses it (ondisk.first_hole)."""


def refuse_holes(store: str, path: str, at: str) -> None:
    """Refuse a sparse store before anything copies or parses it (ondisk.first_hole)."""
    hole = ondisk.first_hole(at)
    if hole is not None:
        raise _refuse(None, store, path, HOLES, f"byte {hole}")


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
    read = _read(kind, store, path, at)
    with timed() as transform_clock:
        tree = _decode(read, allow_empty)
        changes = _transform(kind, read, tree)
    report = _validate(read, changes.result.value, strict)
    encoded = _encode(changes.result.value, at, siblings, read.before, write)
    _release(tree)
    _refuse_incomplete(kind, at, read, changes, encoded)
    result = changes.result
    prepared = PreparedStore(
        store, path, target, at, read.before, encoded.sha256, encoded.size, encoded.temp, changes.counts, report,
        result.added_keys, result.replaced_keys, changes.counters,
    )
    if not prepared.changed:
        prepared.discard()
    log.info(
        "store.transformed", store=store, path=path, changed=prepared.changed, added_keys=prepared.added_keys,
        replaced_keys=prepared.replaced_keys, counters={c.name: c.after for c in result.counters},
        counts=changes.counts, bytes=encoded.size, sha256=encoded.sha256,
        duration_ms=read.parse_ms + transform_clock["duration_ms"] + encoded.duration_ms,
    )
    return prepared


# The steps of `prepare`, in order: read, decode, transform, validate, encode, release.


@dataclass
class _Read:
    """A store as step 1 read it: the file's state, and what the one-pass decode made of its bytes."""

    store: str
    path: str
    before: ondisk.FileState | None
    """The file as read (its bytes are not kept); None when it does not exist."""
    size: int
    """How many bytes were read."""
    one_pass: parsing.Parsed | None
    """The tree, when the one-pass decode took the bytes."""
    members: int
    """The members the bytes write (duplicates.written): the new bytes must write as many, plus
    those the transform adds."""
    parse_ms: float
    general: bytes | None
    """The bytes, kept for the general parse only (when the one pass declined them); see Memory."""

    def refused(self, reason: str, position: str | None = None) -> StoreRefused:
        return _refuse(self.before, self.store, self.path, reason, position)


def _read(kind: StoreKind, store: str, path: str, at: str) -> _Read:
    """Step 1: read the store (a worker maps its pages rather than copying them) and try the
    one-pass decode while a thread hashes the bytes; log `store.read`."""
    with timed() as read_clock:
        snapshot = map_store(store, at) if workers.in_worker() else read_store(store, at, hash_in_background=True)
    data: bytes | memoryview = b"" if snapshot is None else snapshot.data
    with timed() as parse_clock:
        one_pass = parsing.one_pass(kind, path, data)
        members = duplicates.written(data)
    before = None if snapshot is None else snapshot.state
    log.info(
        "store.read", store=store, path=path, existed=before is not None,
        bytes=None if before is None else before.size, sha256=None if before is None else before.sha256,
        **read_clock,
    )
    size = len(data)
    general = _let_go_of_input(snapshot, data, keep=one_pass is None)
    return _Read(store, path, before, size, one_pass, members, parse_clock["duration_ms"], general)


def _decode(read: _Read, allow_empty: bool) -> Any:
    """Step 2: the store's tree: the one pass's, else the general parse's; a missing file (or an
    empty one, with `allow_empty`) is an empty store. Refuses any other empty file, and bytes
    that are not JSON."""
    if read.before is not None and not read.size and not allow_empty:
        raise read.refused("the file is empty (pass --allow-empty to treat it as an empty store)")
    if read.one_pass is not None:
        return read.one_pass.tree
    data = _take_bytes(read)
    if not data:
        return {}
    try:
        return parsing.general(data).tree
    except parsing.NotParsed as exc:
        raise read.refused(exc.reason, exc.position) from None


@dataclass(frozen=True)
class _Transformed:
    result: transform.TransformResult
    counts: dict[str, int]
    counters: dict[str, tuple[Any, int]]
    """Every counter of the kind: name -> (value before, value after); before is None when absent."""
    members: int
    """The members the new bytes must write: those the old bytes wrote, plus the top-level keys
    and counters the transform added."""


def _transform(kind: StoreKind, read: _Read, tree: Any) -> _Transformed:
    """Step 3: the backfill (transform.py, which changes `tree` in place) and the manifest's
    counts. Refuses a store that cannot take the current shape without losing data."""
    top_level = len(tree) if isinstance(tree, dict) else 0
    try:
        result = transform.backfill(kind, tree)
    except transform.ShapeRefusal as exc:
        raise read.refused(exc.reason, exc.pointer) from None
    added = len(result.value) - top_level
    return _Transformed(result, transform.counts(kind, result.value), _counters(kind, result), read.members + added)


def _counters(kind: StoreKind, result: transform.TransformResult) -> dict[str, tuple[Any, int]]:
    changed = {c.name: c for c in result.counters}
    return {
        c.name: (changed[c.name].before if c.name in changed else result.value[c.name], result.value[c.name])
        for c in kind.counters
    }


def _validate(read: _Read, tree: dict[str, Any], strict: bool) -> validate.Report:
    """Step 4: can the service read every record (logged: `store.validated`)? With `strict`,
    refuse the store when it cannot."""
    report = validated(read.store, read.path, tree, None, typed=read.one_pass is not None)
    if strict and not report.readable:
        first = report.problems[0]
        raise read.refused(
            f"the service could not read {report.unreadable} record(s) after migration (--strict); "
            f"first: {first.message}",
            first.pointer,
        )
    return report


@dataclass(frozen=True)
class _Encoded:
    sha256: str
    size: int
    """How many bytes the new file has."""
    temp: str | None
    """The new bytes written and fsynced beside the store; None for a dry run, or when they are
    the bytes the store already holds."""
    too_deep: bool
    colons: int
    duration_ms: float


def _encode(
    tree: dict[str, Any], at: str, siblings: tuple[str, ...], before: ondisk.FileState | None, write: bool
) -> _Encoded:
    """Step 5: the canonical bytes, laid out a few megabytes at a time (jsonio.CanonicalPieces)
    and hashed; with `write`, streamed to a temporary file beside the store, owned and moded like
    the store (ondisk.ownership_for_new for a new one), else only measured."""
    with timed() as encode_clock:
        pieces = jsonio.CanonicalPieces(tree)
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
    return _Encoded(digest.hexdigest(), size, temp, pieces.too_deep, pieces.colons, encode_clock["duration_ms"])


def _refuse_incomplete(kind: StoreKind, at: str, read: _Read, changes: _Transformed, encoded: _Encoded) -> None:
    """Refuse (removing the new file) bytes that would not give the whole tree back: nesting too
    deep for the service's reader, or fewer members than are due (an object that named a member
    twice lost one to the parse: duplicates.py)."""
    if encoded.too_deep:
        reason, position = f"nesting too deep to parse ({jsonio.MAX_DEPTH} levels or more)", None
    elif encoded.colons != changes.members:
        before_sha256 = None if read.before is None else read.before.sha256
        reason, position = duplicates.refusal(kind, at, before_sha256, encoded.colons, changes.members)
    else:
        return
    if encoded.temp is not None:
        durable.discard(encoded.temp)
    raise read.refused(reason, position)


# Memory. A store parses to a tree several times its size, so a preparation stays near one parsed
# tree only if nothing else big is held beside it; these three let go of what the steps are done
# with, and nothing else in this module does.


def _let_go_of_input(snapshot: ondisk.Snapshot | ondisk.Mapped | None, data: bytes | memoryview,
                     *, keep: bool) -> bytes | None:
    """After the one pass: unmap a mapped file, keeping the bytes (as bytes, which the general
    parse and its error positions need: a copy of a mapped file) only when `keep`."""
    kept = bytes(data) if keep else None
    if isinstance(snapshot, ondisk.Mapped):
        snapshot.close()
    return kept


def _take_bytes(read: _Read) -> bytes:
    """The bytes for the general parse, no longer held by `read`: they go when the parse is done."""
    data, read.general = read.general, None
    assert data is not None
    return data


def _release(tree: Any) -> None:
    """Step 6, once the tree is encoded: in a worker, keep it until the worker exits, since
    freeing it object by object takes 0.2-0.3 s for a big store (workers.outlive)."""
    workers.outlive(tree)


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
        before = ondisk.FileState.as_recorded(st, known.after_sha256, known.identity)
        if before is not None:
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
    unchanged = ondisk.FileIdentity.of(st_after) == ondisk.FileIdentity.of(st)  # while it was hashed
    if sha256 != known.after_sha256 or not unchanged or not stat.S_ISREG(st.st_mode):
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
