"""Objects that name the same member twice, anywhere in a store: found by counting colons, and
located by a scan only when there is one.

msgspec, like the earlier implementation, keeps the last of two members with the same name and
drops the other without a word (into structs too), and so would a run. Finding one needs no
second parse, only two counts:

- every member of a parsed tree is written as exactly one `"name": value` in its JSON encoding,
  which never escapes `:` inside a string, so the encoding's colons are the tree's members plus
  the colons in its strings;
- the input's colons are its members plus the colons in its strings, less those written as the
  escape `\\u003a` (`written` counts those apart, and only looks for them when a search for
  `\\u003` finds one).

A member dropped for a duplicate takes its own colon (and any inside its value) with it, and
parsing adds none, so the input names no member twice exactly when `written(input)` equals the
colons of the parsed tree's encoding (for a run's output: plus the members the transform added).
The canonical output is counted as it is made (jsonio.CanonicalPieces.colons), so a run pays
for one count over its input and one over its output (about 0.08 s each for a 200 MB store).

Only when the counts differ does `locate` scan the input token by token, in Python (several
seconds per 100 MB), to name the first duplicates: the path of the object, with map keys by
their position among the map's keys sorted by code point (`$.sessions[#3]`, what jq's `keys`
lists; never a key itself, which may be a token or an e-mail address), and the line and column
of the member that repeats a name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import msgspec
import structlog

from store_migrate.core.stores import StoreKind
from store_migrate.fs import ondisk
from store_migrate.readable import jsonio, validate

log = structlog.get_logger("store_migrate")

_ESCAPED_COLON = re.compile(rb"(?<!\\)(?:\\\\)*\\u003[aA]")
"""`\\u003a` as an escape: its backslash preceded by an even number of backslashes."""
_CHUNK = 1 << 18
_BATCH = 4096
_encoder = msgspec.json.Encoder()  # member order does not change how many colons there are


def written(data: bytes | memoryview) -> int:
    """The colons `data` holds, literal or escaped as `\\u003a`: for JSON, one per member plus
    those in its strings. A memoryview (a mapped file) is copied and counted 256 KiB at a time."""
    if isinstance(data, bytes):
        return data.count(b":") + (_escaped(data) if _maybe_escaped(data) else 0)
    colons, maybe = 0, False
    for start in range(0, len(data), _CHUNK):
        chunk = bytes(data[start : start + _CHUNK + 5])  # an escape across the boundary is seen whole
        colons += chunk.count(b":", 0, _CHUNK)
        maybe = maybe or _maybe_escaped(chunk)
    return colons + (_escaped(data) if maybe else 0)


def _maybe_escaped(data: bytes) -> bool:
    first = data.find(b"\\")  # one memchr: a store without escapes pays almost nothing more
    return first != -1 and data.find(b"\\u003", first) != -1


def _escaped(data: bytes | memoryview) -> int:
    return len(_ESCAPED_COLON.findall(data))


def tree_colons(value: Any) -> int:
    """The colons of the JSON encoding of a parsed store (dicts, lists, scalars, structs),
    encoded a few thousand members at a time so that no copy of the whole store is made."""
    if not isinstance(value, dict):
        return _encoder.encode(value).count(b":")
    total = 0
    for key, held in value.items():
        total += 1 + key.count(":")
        if isinstance(held, (dict, list)) and len(held) > _BATCH:
            total += sum(_encoder.encode(part).count(b":") for part in _parts(held))
        else:
            total += _encoder.encode(held).count(b":")
    return total


def _parts(held: dict[str, Any] | list[Any]) -> Iterator[dict[str, Any] | list[Any]]:
    if isinstance(held, list):
        for start in range(0, len(held), _BATCH):
            yield held[start : start + _BATCH]
        return
    items = iter(held.items())
    while part := dict(islice(items, _BATCH)):
        yield part


# ------------------------------------------------------------------------------- locating


@dataclass(frozen=True)
class Duplicate:
    """An object that names a member twice: its path (map keys by position) and where the
    member that repeats the name starts."""

    pointer: str
    offset: int
    record: bool
    """The object is a record of the schema (the service's reader refuses it whole); otherwise a
    map or a value of any shape (the service keeps the last member of the name)."""

    def position(self, data: bytes) -> str:
        where = jsonio.JsonError("", self.offset).position(data)
        assert where is not None
        return where


_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[{}\[\],]', re.DOTALL)
_QUOTE, _OPEN_OBJECT, _OPEN_ARRAY, _COMMA = b'"{[,'


class _Frame:
    """An object or array open at the scan's position."""

    __slots__ = ("keys", "expecting_key", "step", "open")

    def __init__(self, is_object: bool) -> None:
        self.keys: set[bytes] | None = set() if is_object else None
        self.expecting_key = is_object
        self.step: Any = None if is_object else 0
        """The member being read: its name (UTF-8, escapes decoded) or its index."""
        self.open = True


_Part = str | tuple[_Frame, bytes]
"""A step of a pointer: its text, or a member named by its position (known once its object closes)."""


def locate(data: bytes, kind: StoreKind, limit: int = 1) -> list[Duplicate]:
    """The first `limit` members of `data` (valid JSON) that repeat a name of their object, in
    text order. Scans every token in Python: only for a store known to hold one."""
    found: list[tuple[list[_Part], dict[str, Any] | None, int]] = []
    needed: list[_Frame] = []
    """Objects on the path of a found duplicate that are named by position: all their keys count."""
    stack: list[_Frame] = []
    top: _Frame | None = None
    for match in _TOKEN.finditer(data):
        start = match.start()
        byte = data[start]
        if byte == _QUOTE:
            if top is not None and top.expecting_key:
                assert top.keys is not None
                token = match.group()
                name = token[1:-1] if b"\\" not in token else json.loads(token).encode("utf-8", "surrogatepass")
                if name in top.keys and len(found) < limit:
                    parts, node = _walk(kind, [(frame, frame.step) for frame in stack[:-1]])
                    found.append((parts, node, start))
                    needed += [part[0] for part in parts if not isinstance(part, str)]
                top.keys.add(name)
                top.step = name
                top.expecting_key = False
        elif byte in (_OPEN_OBJECT, _OPEN_ARRAY):
            top = _Frame(byte == _OPEN_OBJECT)
            stack.append(top)
        elif byte == _COMMA:
            assert top is not None
            if top.keys is not None:
                top.expecting_key = True
            else:
                top.step += 1
        else:
            stack.pop().open = False
            top = stack[-1] if stack else None
            if len(found) == limit and not any(frame.open for frame in needed):
                break
    return [
        Duplicate("".join(map(_render, parts)), offset, node is not None and "properties" in node)
        for parts, node, offset in found
    ]


def _render(part: _Part) -> str:
    if isinstance(part, str):
        return part
    frame, name = part
    return f"[#{sorted(frame.keys or ()).index(name)}]"


def _walk(kind: StoreKind, steps: list[tuple[_Frame, Any]]) -> tuple[list[_Part], dict[str, Any] | None]:
    """The pointer's steps from the root along `steps`, and the schema node they reach (None: a
    value of any shape). Fields of a record are named; map keys and unknown fields by position."""
    parts: list[_Part] = ["$"]
    node = _resolve(kind, kind.schema)
    for frame, step in steps:
        if frame.keys is None:
            parts.append(f"[{step}]")
            node = None if node is None else _resolve(kind, node.get("items"))
            continue
        fields = {} if node is None else node.get("properties", {})
        name = step.decode("utf-8", "surrogatepass")
        if name in fields:
            parts.append(f".{name}")
            node = _resolve(kind, fields[name])
        else:
            parts.append((frame, step))
            node = None if node is None or "properties" in node else _resolve(kind, node.get("additionalProperties"))
    return parts, node


def _resolve(kind: StoreKind, node: dict[str, Any] | None) -> dict[str, Any] | None:
    while node is not None and "$ref" in node:
        node = kind.schema.get("$defs", {}).get(node["$ref"].removeprefix("#/$defs/"))
    return node


# ------------------------------------------------------------------------------- verdicts


def refusal(kind: StoreKind, path: str, sha256: str | None, counted: int, expected: int) -> tuple[str, str | None]:
    """Why a run refuses a store whose output holds `counted` colons where `expected` were due
    (the bytes were dropped after parsing: read again, and used only if they are the same), and
    where: the reason and position for StoreRefused."""
    snapshot = ondisk.read_snapshot(path)
    if snapshot is None or snapshot.sha256 != sha256:
        return "an object names the same member twice (the file has changed since: run again to locate it)", None
    found = locate(snapshot.data, kind)
    if not found:
        return (
            f"the output holds {counted} ':' where {expected} were due, yet no object names a member twice: "
            "a bug in store-migrate",
            None,
        )
    return (
        f"the object at {found[0].pointer} names the same member twice (a run would keep only the last)",
        found[0].position(snapshot.data),
    )


def add_to(
    report: validate.Report, kind: StoreKind, data: bytes, value: Any, limit: int = validate.DEFAULT_LIMIT
) -> None:
    """Put the objects of a parsed store that name a member twice first among the report's
    problems: a record's duplicate field makes it unreadable (the service's reader refuses it),
    a map's duplicate key is a problem too (the service would keep only the last member)."""
    counted, expected = tree_colons(value), written(data)
    if counted == expected:
        return
    found = locate(data, kind, limit)
    problems = [
        validate.Problem(
            d.pointer,
            f"duplicate {'field' if d.record else 'key'}, named again at {d.position(data)}: "
            + ("the service's reader refuses a record that names a field twice" if d.record
               else "the service would keep only the last member of that name"),
        )
        for d in found
    ] or [validate.Problem("$", f"the parsed file holds {counted} ':' where the file holds {expected}, yet no "
                                "object names a member twice: a bug in store-migrate")]
    report.unreadable += sum(1 for d in found if d.record)
    report.problems[:0] = problems
    del report.problems[limit:]
    log.warning("store.duplicate_members", store=kind.name, pointers=[p.pointer for p in problems],
                records=sum(1 for d in found if d.record))
