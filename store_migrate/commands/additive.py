"""`verify --additive`: prove, member by member, that a migration lost and changed nothing.

For each store of a manifest, its backup (the bytes before the run, pinned by `before_sha256`)
and its live file are parsed, and every member and value of the backup must be present and equal
in the live store, apart from the two changes the backfill documents:

- a top-level key of the kind that was absent, `null` or the *other* empty container now holds
  its container;
- a counter that the counter rule raised: the live counter is an integer and equals what the
  rule gives for the backup's counter and rows (transform's own functions, `_counter_rule`).

Members the live store holds beyond the backup's (records the service wrote since) are
additions, not differences: the verdict is about what was lost or changed. An object of the
backup that names a member twice is a difference too: parsing keeps only the last of the two (as
the earlier implementation did), so the live store cannot hold both (duplicates.py finds them by
counting colons). Equal means the same
JSON value exactly: the same type (an integer never equals a number written with a fraction or
exponent, `1` and `1.0` differ, nor `true`) and the same value (integers exactly at any size,
floats as the doubles the strict parser reads, so a float whose last digit moved differs, and
`-0.0` differs from `0.0`), strings exactly.

How it is fast. The usual case is proven without parsing the live store: canonical bytes
(jsonio) name exactly one value and every value has exactly one canonical form, so when the live
bytes are the canonical bytes of the backup with the documented changes applied (what a run
writes), the live store is that value. The backup is decoded by the one-pass typed decode when
it takes it (typed.py), as a run does but without checking timestamps and u64 ceilings (whether
the service can read a record is not this proof's question, and such values are decoded exactly
either way), and its canonical bytes are compared with the live file piece by piece. Anything
else (the live file is not those bytes, the typed decode declines) parses both in full with the
strict parser (jsonio.decode) and walks them, which also finds where they differ. Both give the
same verdict: the first only ever proves what the walk would.

Differences are named as validate.py names problems, never by a value or a key: schema field
names as they are (`.status`), array items by index, and map members (or members the schema
does not name) by their position `[#N]` among the *backup's* map keys sorted by code point
(`jq '.sessions | keys[3]' <backup>` gives the key back). Counters are integers the dry run shows
already; other values are told only by their JSON type.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import structlog

from store_migrate.core import transform
from store_migrate.core.manifest import StoreEntry
from store_migrate.core.redact import Positions
from store_migrate.core.stores import StoreKind, store_kind
from store_migrate.fs import ondisk, workers
from store_migrate.logs import timed
from store_migrate.readable import duplicates, jsonio, typed
from store_migrate.readable.validate import json_type

log = structlog.get_logger("store_migrate")

DEFAULT_LIMIT = 20
"""Differences listed per store (all are counted)."""

_CONTAINER: dict[str, type] = {"object": dict, "array": list}
_OTHER: dict[str, type] = {"object": list, "array": dict}


def _counter_rule(name: str, before: Any, rows: Any) -> int | None:
    """What the backfill's counter rule makes of the counter `name` holding `before` (None when
    absent) over `rows`, or None when the rule refuses such a counter (it would refuse the store).
    The one place that calls the transform's counter functions: the rule is theirs, not ours."""
    try:
        return max(transform.counter_value(name, before), transform.next_id(rows))
    except transform.ShapeRefusal:
        return None


@dataclass(frozen=True)
class Difference:
    pointer: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


@dataclass
class Additive:
    """The verdict for one store."""

    store: str
    ok: bool
    method: str
    """How it was decided: `unchanged` (the live bytes are the backup's), `canonical` (the live
    bytes are the canonical bytes of the backup with the documented changes), `walk` (both
    parsed and compared member by member), `new store` (nothing existed before), or `not proven`."""
    differences: list[Difference] = field(default_factory=list)
    """The first differences (at most the limit asked for)."""
    count: int = 0
    """How many differences there are in all."""
    reason: str | None = None
    """Why it could not be proven at all (a backup missing or not the manifest's bytes)."""
    backup_sha256: str | None = None
    """The hash of the backup bytes the proof read (None: it read none), which verify's check of
    the backup takes instead of reading and hashing them again (verification.settle_backup)."""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "method": self.method, "differences": self.count,
                "first": [d.to_json() for d in self.differences], "reason": self.reason}


def check(entry: StoreEntry, target: str, *, limit: int = DEFAULT_LIMIT) -> Additive:
    """Prove that the live store at `target` (the manifest's path with links resolved, as verify
    found it) holds every member and value of the backup of `entry` (the module docstring)."""
    with timed() as clock:
        result = _check(store_kind(entry.store), entry, target, limit)
    (log.info if result.ok else log.warning)(
        "store.additive", store=entry.store, path=entry.path, additive=result.ok, method=result.method,
        differences=result.count, first=[f"{d.pointer}: {d.message}" for d in result.differences],
        reason=result.reason, **clock,
    )
    return result


def _check(kind: StoreKind, entry: StoreEntry, target: str, limit: int) -> Additive:
    if not entry.existed:
        return Additive(entry.store, True, "new store")
    try:
        live = _Live.open(target)
    except OSError as exc:  # a directory, no permission
        return _unproven(entry, f"live store unreadable: {entry.path} ({exc.strerror or exc})")
    if live is None:
        return Additive(entry.store, False, "not proven", [Difference("$", "the live store file is missing")], 1)
    try:
        return _prove(kind, entry, live, limit)
    except OSError as exc:
        return _unproven(entry, f"live store unreadable: {entry.path} ({exc.strerror or exc})")
    finally:
        live.close()


def _unproven(entry: StoreEntry, reason: str) -> Additive:
    return Additive(entry.store, False, "not proven", reason=reason)


def _open_backup(entry: StoreEntry, *, mapped: bool) -> ondisk.Snapshot | ondisk.Mapped | str:
    """The backup's bytes, hashed by a thread meanwhile (mapped: in a worker process, where a file
    truncated under the map ends only that process); or why not."""
    assert entry.backup_path is not None
    try:
        found = ondisk.map_snapshot(entry.backup_path) if mapped else ondisk.read_snapshot(
            entry.backup_path, hash_in_background=True)
    except OSError as exc:  # a link (never followed), a directory, no permission
        return f"backup unreadable: {entry.backup_path} ({exc.strerror or exc})"
    return f"backup missing: {entry.backup_path}" if found is None else found


def _prove(kind: StoreKind, entry: StoreEntry, live: _Live, limit: int) -> Additive:
    """The usual store, proven by canonical bytes; anything else walked (`_walked`). The backup
    is released (a map's pages given back) before the live file is compared with it."""
    backup = _open_backup(entry, mapped=workers.in_worker())
    if isinstance(backup, str):
        return _unproven(entry, backup)
    try:
        unchanged = live.equals(backup.data)
        value = None if unchanged or not backup.data else _typed(kind, backup.data)
        members = duplicates.written(backup.data)
        digest = backup.sha256  # the thread hashed the very bytes decoded
    finally:
        if isinstance(backup, ondisk.Mapped):
            backup.close()
        del backup
    result = _proven(kind, entry, live, limit, digest, unchanged, value, members)
    result.backup_sha256 = digest
    return result


def _proven(kind: StoreKind, entry: StoreEntry, live: _Live, limit: int, digest: str, unchanged: bool,
            value: dict[str, Any] | None, members: int) -> Additive:
    if digest != entry.before_sha256:
        return _unproven(entry, f"backup {entry.backup_path} does not hash to before_sha256")
    if unchanged:
        return Additive(entry.store, True, "unchanged")
    if value is not None and _holds_canonical(live, expected(kind, value), members + _added(kind, value)):
        workers.outlive(value)  # in a worker, never freed one by one (0.3 s for a 200 MB codex store)
        return Additive(entry.store, True, "canonical")
    tried, value = value is not None, None
    again = _open_backup(entry, mapped=False)  # read once more, as bytes: the walk needs them
    if isinstance(again, str) or again.sha256 != entry.before_sha256:
        return _unproven(entry, f"backup {entry.backup_path} changed while it was read")
    assert isinstance(again.data, bytes)
    return _walked(kind, entry.store, again.data, members, live, limit, canonical_tried=tried)


def _typed(kind: StoreKind, data: bytes | memoryview) -> dict[str, Any] | None:
    try:
        return typed.decode(kind, data, checked=False)  # exact is enough: readable or not is verify's
    except typed.Declined:
        return None


class _Live:
    """The live file, read a piece at a time where it is compared (no copy of it held, no pages
    mapped), whole only for the walk."""

    _CHUNK = 1 << 21

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    @classmethod
    def open(cls, path: str) -> _Live | None:
        try:
            fd, st = ondisk.open_regular(path)
        except FileNotFoundError:
            return None
        return cls(fd, st.st_size)

    def __len__(self) -> int:
        return self.size

    def holds(self, piece: bytes | memoryview, at: int) -> bool:
        """Whether the file holds `piece` at offset `at` (a memcmp of the bytes read there)."""
        return at + len(piece) <= self.size and os.pread(self.fd, len(piece), at).startswith(piece)

    def equals(self, data: bytes | memoryview) -> bool:
        return len(data) == self.size and all(
            self.holds(data[start : start + self._CHUNK], start) for start in range(0, self.size, self._CHUNK))

    def whole(self) -> bytes:
        parts, at = [], 0
        while at < self.size:
            part = os.pread(self.fd, self.size - at, at)
            if not part:
                break
            parts.append(part)
            at += len(part)
        return b"".join(parts)

    def close(self) -> None:
        os.close(self.fd)


def _walked(
    kind: StoreKind, store: str, data: bytes, members: int, live: _Live, limit: int, *, canonical_tried: bool
) -> Additive:
    """Both parsed in full and compared member by member (the module docstring); first the
    canonical bytes once more when the typed decode declined the backup (an unknown field...)."""
    try:
        before = jsonio.decode(data) if data else {}
    except jsonio.JsonError as exc:
        where = exc.position(data)
        return Additive(store, False, "walk", [Difference(
            "$", f"the backup does not parse ({exc.reason}{f' at {where}' if where else ''}): the live store "
                 "cannot be shown to hold what it held")], 1)
    if not canonical_tried and isinstance(before, dict) and _holds_canonical(
            live, expected(kind, dict(before)), members + _added(kind, before)):
        return Additive(store, True, "canonical")
    text = live.whole()
    try:
        after = jsonio.decode(text)
    except jsonio.JsonError as exc:
        where = exc.position(text)
        return Additive(store, False, "walk", [Difference(
            "$", f"the live store does not parse ({exc.reason}{f' at {where}' if where else ''})")], 1)
    walk = _Walk(kind, limit)
    if duplicates.tree_colons(before) != members:  # the parse kept the last of two members of one name
        for twice in duplicates.locate(data, kind, limit) or [duplicates.Duplicate("$", 0, False)]:
            walk.add_at(twice.pointer, f"names a member twice in the backup (again at {twice.position(data)}): the "
                                       "live store can hold only one of the two (the earlier implementation kept "
                                       "the last)")
    walk.root(before, after)
    workers.outlive((before, after))
    return Additive(store, walk.count == 0, "walk", walk.found, walk.count)


def expected(kind: StoreKind, value: dict[str, Any]) -> dict[str, Any]:
    """The backup's top-level object with the documented changes applied (a shallow copy): what a
    run that lost and changed nothing writes."""
    result = dict(value)
    for key, container in kind.containers.items():
        held = result.get(key)
        if held is None or (isinstance(held, _OTHER[container]) and not held):
            result[key] = _CONTAINER[container]()
    for counter in kind.counters:
        raised = _counter_rule(counter.name, value.get(counter.name), result.get(counter.rows_key))
        if raised is not None:
            result[counter.name] = raised
    return result


def _added(kind: StoreKind, value: dict[str, Any]) -> int:
    """How many members `expected` adds to the backup's top level (the keys it lacked)."""
    return sum(1 for key in (*kind.containers, *(c.name for c in kind.counters)) if key not in value)


def _holds_canonical(live: _Live, value: dict[str, Any], members: int) -> bool:
    """Whether the live bytes are exactly the canonical bytes of `value`, compared piece by piece
    (stops at the first piece that differs), and `value` holds `members` members (the backup's
    and those added): when it holds fewer, the backup named a member twice and the parse kept
    one of them (duplicates.py counts both by their colons)."""
    at = 0
    pieces = jsonio.CanonicalPieces(value)
    for piece in pieces:
        if at + len(piece) > len(live) or not live.holds(piece, at):
            return False
        at += len(piece)
    return at == len(live) and pieces.colons == members


# ------------------------------------------------------------------------------ the walk


_ABSENT: Any = object()


def _same(before: Any, after: Any) -> bool:
    """The same JSON scalar exactly: type and value (and the sign of a zero)."""
    if type(before) is not type(after) or before != after:
        return False
    return type(before) is not float or math.copysign(1.0, before) == math.copysign(1.0, after)


def _describe_counter(value: Any) -> str:
    """A counter as the dry run shows one: an integer from 0 to 2^64-1 as itself, anything else
    by its JSON type (it could be anything a store holds)."""
    if value is _ABSENT or value is None:
        return "absent" if value is _ABSENT else "null"
    if type(value) is int:
        return str(value) if 0 <= value <= transform.U64_MAX else "an integer outside the u64 range"
    return json_type(value)


Step = tuple[Any, Any, bool]
"""One step of a path: (the container, the key or index in it, whether a schema names the key)."""


class _Walk:
    """Compare a parsed backup with a parsed live store (the module docstring says how)."""

    def __init__(self, kind: StoreKind, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self.defs: dict[str, Any] = kind.schema.get("$defs", {})
        self.count = 0
        self.found: list[Difference] = []
        self.positions = Positions()

    def add(self, path: tuple[Step, ...], message: str) -> None:
        self.count += 1
        if len(self.found) < self.limit:
            self.found.append(Difference(self.pointer(path), message))

    def add_at(self, pointer: str, message: str) -> None:
        self.count += 1
        if len(self.found) < self.limit:
            self.found.append(Difference(pointer, message))

    def pointer(self, path: tuple[Step, ...]) -> str:
        text = "$"
        for container, key, named in path:
            if isinstance(key, int):
                text += f"[{key}]"
            elif named and key.isidentifier() and key.isascii():
                text += f".{key}"
            else:
                text += self.positions.member(container, key)
        return text

    def resolve(self, node: Any) -> dict[str, Any]:
        while isinstance(node, dict) and "$ref" in node:
            node = self.defs.get(node["$ref"].removeprefix("#/$defs/"), {})
        return node if isinstance(node, dict) else {}

    def root(self, before: Any, after: Any) -> None:
        if not isinstance(before, dict) or not isinstance(after, dict):
            self.values(before, after, self.kind.schema, ())
            return
        counters = {c.name: c for c in self.kind.counters}
        properties = self.kind.schema.get("properties", {})
        for key, held in before.items():
            path = ((before, key, key in properties),)
            now = after.get(key, _ABSENT)
            if key in counters:
                continue
            if now is _ABSENT:
                self.add(path, f"is missing in the live store (the backup holds {json_type(held)} there)")
            elif key in self.kind.containers and self._emptied(key, held):
                if not isinstance(now, _CONTAINER[self.kind.containers[key]]):
                    self.add(path, f"was {json_type(held)}, now {json_type(now)}: the backfill makes it an "
                                   f"{self.kind.containers[key]}")
            else:
                self.values(held, now, properties.get(key, {}), path)
        for name, counter in counters.items():
            self.counter(name, before.get(name, _ABSENT), after.get(name, _ABSENT),
                         (before.get(counter.rows_key), after.get(counter.rows_key)),
                         ((before if name in before else after, name, True),))

    def _emptied(self, key: str, held: Any) -> bool:
        return held is None or (isinstance(held, _OTHER[self.kind.containers[key]]) and not held)

    def counter(self, name: str, before: Any, after: Any, rows: tuple[Any, Any], path: tuple[Step, ...]) -> None:
        """A counter may be what it was, or what the counter rule makes of it over the backup's rows
        (what the run wrote) or over the live store's (rows the service added since, and the
        counter it raised with them)."""
        if before is not _ABSENT and after is not _ABSENT and _same(before, after):
            return
        if before is _ABSENT and after is _ABSENT:
            return
        current = None if before is _ABSENT else before
        raised = _counter_rule(name, current, rows[0])
        if type(after) is int and after in (raised, _counter_rule(name, current, rows[1])):
            return
        if after is _ABSENT:
            self.add(path, f"counter is missing in the live store (the backup holds {_describe_counter(before)})")
        elif raised is None:
            self.add(path, f"counter is {_describe_counter(after)}; the backup holds "
                           f"{_describe_counter(before)}, which the counter rule refuses to replace")
        else:
            self.add(path, f"counter is {_describe_counter(after)}; from the backup ({_describe_counter(before)} "
                           f"and its rows) the counter rule gives {raised}")

    def values(self, before: Any, after: Any, node: Any, path: tuple[Step, ...]) -> None:
        """Every member of `before` present and equal in `after`, depth first in the backup's
        order, without recursion (stores may nest deeply)."""
        stack = [(before, after, node, path)]
        while stack:
            old, new, schema, where = stack.pop()
            if new is _ABSENT:
                self.add(where, f"is missing in the live store (the backup holds {json_type(old)} there)")
            elif type(old) is not type(new):
                self.add(where, f"was {json_type(old)}, now {json_type(new)}")
            elif isinstance(old, dict):
                schema = self.resolve(schema)
                properties = schema.get("properties", {})
                members = schema.get("additionalProperties", {})
                for key, held in reversed(old.items()):
                    now = new.get(key, _ABSENT)
                    if type(held) in (dict, list) or not _same(held, now):
                        stack.append((held, now, properties.get(key, members), (*where, (old, key, key in properties))))
            elif isinstance(old, list):
                items = self.resolve(schema).get("items", {})
                for index in range(min(len(old), len(new)) - 1, -1, -1):
                    held, now = old[index], new[index]
                    if type(held) in (dict, list) or not _same(held, now):
                        stack.append((held, now, items, (*where, (old, index, False))))
                if len(new) < len(old):
                    self.add(where, f"has {len(new)} items in the live store, {len(old)} in the backup")
            elif not _same(old, new):
                self.add(where, _changed(old))


def _changed(before: Any) -> str:
    if isinstance(before, bool):
        return "holds the other boolean"
    if isinstance(before, int):
        return "holds another integer"
    if isinstance(before, float):
        return "holds another number (a different double, or the sign of a zero)"
    if isinstance(before, str):
        return "holds another string"
    return f"holds another {json_type(before)}"


