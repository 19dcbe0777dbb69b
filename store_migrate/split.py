"""One big store on both cores: its biggest map is cut into two ranges of members, and each
range is parsed, validated and encoded by its own worker.

A codex store is almost all `messages_by_thread`, so handing whole stores to workers leaves one
core busy with it while the other waits. msgspec finds the members of that map without parsing
them (`msgspec.Raw`, about 0.1 s for 200 MB); the member keys are sorted, cut into two
contiguous ranges of about equal size, and each worker turns its range into the canonical lines
of those members. Because the ranges follow the sorted key order, the canonical bytes of the
map are the two blocks joined, and the whole store is its small part encoded as usual with the
map's place filled by them. Members are handled in batches, so no worker ever holds the whole
parsed map.

Anything unusual (the bytes do not parse, the map is not a map, a top-level value is refused)
returns None: the caller then takes the ordinary path, whose messages name the exact position.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import jsonio, transform, validate, workers
from .stores import StoreKind

SPLIT_BYTES = 16 * 2**20
"""A map at least this big is split (when the machine has two cores)."""
_BATCH_BYTES = 8 * 2**20

_members: dict[str, msgspec.Raw] = {}
_keys: list[str] = []
"""The map being split, set before forking so workers inherit it instead of receiving it."""


class _Unusual(Exception):
    """The fast path does not apply; the ordinary path will say why precisely."""


@dataclass
class RangeResult:
    block: bytes
    entries: int = 0
    items: int = 0
    report: validate.Report = field(default_factory=lambda: validate.Report(""))


@dataclass
class SplitResult:
    result: transform.TransformResult | None
    """With `encode`: the transform of the small part (the split map stands in as {})."""
    after: bytes | None
    counts: dict[str, int]
    report: validate.Report


def _big_map(kind: StoreKind, top: dict[str, msgspec.Raw]) -> str | None:
    counted = {c.rows_key for c in kind.counters}
    sizes = {
        k: len(v) for k, v in top.items()
        if kind.containers.get(k) == "object" and k not in counted and len(v) >= SPLIT_BYTES
    }
    return max(sizes, key=sizes.__getitem__) if sizes else None


def run_split(kind: StoreKind, data: bytes, *, encode: bool, limit: int) -> SplitResult | None:
    """With `encode`: transform, validate and encode a store (a run). Without: validate it as
    it is (verify --strict). Its biggest map is split over two workers; None when the store has
    no such map, the machine has one core, or anything is unusual."""
    global _members, _keys
    if len(data) < SPLIT_BYTES or (os.cpu_count() or 1) < 2:
        return None
    try:
        top = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
        key = _big_map(kind, top)
        if key is None:
            return None
        _members = msgspec.json.decode(top[key], type=dict[str, msgspec.Raw])
        small = {k: jsonio.decode(bytes(v)) for k, v in top.items() if k != key}
    except (msgspec.DecodeError, msgspec.ValidationError, jsonio.JsonError):
        return None
    small[key] = {}
    result = None
    if encode:
        try:
            result = transform.backfill(kind, small)
        except transform.ShapeRefusal:
            return None
    _keys = sorted(_members)
    cut = _halfway(_keys)
    jobs = [(kind.name, key, 0, cut, encode, limit), (kind.name, key, cut, len(_keys), encode, limit)]
    sizes = [sum(len(_members[k]) for k in _keys[lo:hi]) for _, _, lo, hi, _, _ in jobs]
    try:
        ranges = workers.map_stores(_encode_range, jobs, [max(s, workers.PARALLEL_BYTES) for s in sizes])
    finally:
        _members, _keys = {}, []
    if not all(isinstance(r, RangeResult) for r in ranges):
        return None
    parts: list[RangeResult] = ranges  # type: ignore[assignment]
    whole = small if result is None else result.value
    report = validate.validate(kind.name, whole, None, limit=limit)
    for part in parts:
        report.unreadable += part.report.unreadable
        report.problems += part.report.problems[: max(0, limit - len(report.problems))]
    counts = transform.counts(kind, whole)
    for spec in kind.counts:
        if spec.key == key:
            counts[spec.name] = sum(p.entries if spec.method == "entries" else p.items for p in parts)
    after = None
    if result is not None:
        after = _assemble(result.value, key, [p.block for p in parts])
        if after is None or jsonio.nesting_too_deep(after):
            return None  # the ordinary path refuses it with its message
    return SplitResult(result, after, counts, report)


def _halfway(keys: list[str]) -> int:
    total = sum(len(_members[k]) for k in keys)
    running = 0
    for index, k in enumerate(keys):
        running += len(_members[k])
        if running * 2 >= total:
            return index + 1
    return len(keys)


def _assemble(value: dict[str, Any], key: str, blocks: list[bytes]) -> bytes | None:
    """The canonical bytes of `value` with `key`'s map made of the members' canonical lines."""
    sentinel = f"store-migrate-split-{secrets.token_hex(16)}"
    skeleton = jsonio.encode({**value, key: sentinel})
    marker = jsonio.encode_compact(sentinel)
    if skeleton.count(marker) != 1:
        return None
    inner = b",\n".join(b for b in blocks if b)
    return skeleton.replace(marker, b"{\n" + inner + b"\n  }" if inner else b"{}")


def _encode_range(kind_name: str, key: str, lo: int, hi: int, encode: bool, limit: int) -> RangeResult | None:
    """Parse, validate and encode members lo..hi of the split map (in a worker)."""
    checker = validate.validator(kind_name)
    out = RangeResult(b"", report=validate.Report(kind_name))
    blocks: list[bytes] = []
    batch: list[str] = []
    size = 0
    try:
        for index in range(lo, hi + 1):
            if index < hi:
                batch.append(_keys[index])
                size += len(_members[_keys[index]])
            if batch and (index == hi or size >= _BATCH_BYTES):
                blocks.append(_encode_batch(checker, key, batch, out, encode, limit))
                batch, size = [], 0
    except _Unusual:
        return None
    out.block = b",\n".join(b for b in blocks if b)
    return out


def _encode_batch(
    checker: validate.StoreValidator, key: str, batch: list[str], out: RangeResult, encode: bool, limit: int
) -> bytes:
    document = b"{" + b",".join(jsonio.encode_compact(k) + b":" + bytes(_members[k]) for k in batch) + b"}"
    try:
        value = jsonio.decode(document)
    except jsonio.JsonError as exc:
        raise _Unusual(exc.reason) from None
    out.entries += len(value)
    out.items += sum(len(v) for v in value.values() if isinstance(v, list))
    checker.check_members(out.report, key, value.items(), limit)
    if not encode:
        workers.outlive(value)
        return b""
    laid = jsonio.encode(value)
    workers.outlive(value)
    # members sit one level deeper in the store than in this batch's own object
    return b"  " + laid[2:-2].replace(b"\n", b"\n  ")
