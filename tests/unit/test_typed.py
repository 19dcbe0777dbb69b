"""The one-pass path (typed.py) against the general path, on stores generated from the schemas.

The rule: whenever the typed decode takes a store, the general path (parse into dicts and lists,
transform, validate) finds it readable and writes the same bytes, counters and counts. And it
must take every plain readable store, or the run would silently lose its speed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import json_values

from store_migrate.core import transform
from store_migrate.core.stores import KIND_ORDER, store_kind
from store_migrate.readable import jsonio, typed, validate

TIMESTAMPS = st.sampled_from([
    "2026-03-04T05:06:07Z", "2026-03-04t05:06:07.123456789z", "2024-02-29T23:59:59+14:00",
    "2000-02-29T00:00:00-00:00", "1999-12-31T12:00:00.5+05:30",
])
KEYS = st.text(max_size=6)


def from_schema(kind: str, node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows (what the service reads), including edge values."""
    schema = store_kind(kind).schema
    if "$ref" in node:
        return from_schema(kind, schema["$defs"][node["$ref"].removeprefix("#/$defs/")])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    types = node.get("type")
    if types is None:
        return json_values
    kinds = types if isinstance(types, list) else [types]
    strategy = _typed(kind, [t for t in kinds if t != "null"][0], node)
    return strategy | st.none() if "null" in kinds else strategy


def _typed(kind: str, name: str, node: dict[str, Any]) -> st.SearchStrategy[Any]:
    if name == "string":
        return TIMESTAMPS if node.get("format") == "date-time" else st.text(max_size=8)
    if name == "boolean":
        return st.booleans()
    if name == "integer":
        low, high = node["minimum"], node["maximum"]
        return st.integers(low, high) | st.sampled_from([low, high])
    if name == "array":
        return st.lists(from_schema(kind, node["items"]), max_size=3)
    if "properties" in node:
        required = set(node.get("required", ()))
        props = node["properties"]
        return st.fixed_dictionaries(
            {p: from_schema(kind, s) for p, s in props.items() if p in required},
            optional={p: from_schema(kind, s) for p, s in props.items() if p not in required},
        )
    return st.dictionaries(KEYS, from_schema(kind, node.get("additionalProperties", {})), max_size=3)


def readable_stores(kind_name: str) -> st.SearchStrategy[dict[str, Any]]:
    kind = store_kind(kind_name)
    props = kind.schema["properties"]
    optional: dict[str, st.SearchStrategy[Any]] = {
        key: from_schema(kind_name, props[key]) | st.none() for key in kind.containers
    }
    for counter in kind.counters:  # the transform rewrites counters: anything goes before it
        optional[counter.name] = st.integers(-5, 2**64 + 5) | st.none() | st.text(max_size=3) | st.floats(0, 9)
    return st.fixed_dictionaries({}, optional=optional)


def both_paths(kind_name: str, data: bytes) -> tuple[bytes, dict[str, Any], bytes | None]:
    """(general bytes, general counters and counts, typed bytes or None when it declined)."""
    kind = store_kind(kind_name)
    try:
        general = transform.backfill(kind, jsonio.decode(data))
    except transform.ShapeRefusal as refused:  # a counter that does not count by value: both paths refuse
        try:
            fast_value = typed.decode(kind, data)
        except typed.Declined:
            return b"", {}, b""
        with pytest.raises(transform.ShapeRefusal) as also:
            transform.backfill(kind, fast_value)
        assert (also.value.reason, also.value.pointer) == (refused.reason, refused.pointer)
        return b"", {}, b""
    summary = {"counters": general.counters, "counts": transform.counts(kind, general.value)}
    try:
        fast_value = typed.decode(kind, data)
    except typed.Declined:
        return jsonio.encode(general.value), summary, None
    fast = transform.backfill(kind, fast_value)
    assert {"counters": fast.counters, "counts": transform.counts(kind, fast.value)} == summary
    assert validate.validate(kind_name, general.value, None).readable, "typed took a store the service cannot read"
    return jsonio.encode(general.value), summary, b"".join(jsonio.CanonicalPieces(fast.value, batch=2))


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(KIND_ORDER), st.data())
def test_typed_path_takes_readable_stores_and_writes_the_same_bytes(kind_name: str, data: st.DataObject) -> None:
    value = data.draw(readable_stores(kind_name))
    general, _, fast = both_paths(kind_name, jsonio.encode(value))
    assert fast is not None, "a readable store without unknown fields must take the typed path"
    assert fast == general


def _mutations(value: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The store with one value somewhere replaced (or a field added), readable or not."""
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            paths.append((node, key))
            walk(child)

    walk(value)
    if not paths:
        return st.just(value)

    def mutate(choice: tuple[int, Any, bool]) -> dict[str, Any]:
        index, replacement, add = choice
        parent, key = paths[index % len(paths)]
        if add and isinstance(parent, dict):
            parent["unknown_" + str(key)] = replacement
        else:
            parent[key] = replacement
        return value

    odd = st.sampled_from(["2026-03-04 05:06:07Z", "2026-02-30T00:00:00Z", 2**64, -1, 1.0, "", {}, None]) | json_values
    return st.tuples(st.integers(0, 10**6), odd, st.booleans()).map(mutate)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(KIND_ORDER), st.data())
def test_when_typed_path_takes_any_store_it_matches_the_general_path(kind_name: str, data: st.DataObject) -> None:
    value = data.draw(readable_stores(kind_name))
    mutated = data.draw(_mutations(copy.deepcopy(value)))
    try:
        encoded = jsonio.encode(mutated)
        general, _, fast = both_paths(kind_name, encoded)
    except transform.ShapeRefusal:
        with pytest.raises(typed.Declined):
            typed.decode(store_kind(kind_name), encoded)
        return
    if fast is not None:
        assert fast == general


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b'{"threads": {"t": {"thread_id": "t", "user_id": "u", "org_id": "o", "created_at": "2026-03-04T05:06:07Z",'
         b' "updated_at": "2026-03-04T05:06:07Z", "message_count": 1, "from_a_newer_release": 1}}}', "unknown field"),
        (b'{"threads": {}, "zz": 1}', "unknown top-level key"),
        (b'{"threads": []}', "wrong empty container"),
        (b'{"messages_by_thread": {"t": [{"message_id": "m", "thread_id": "t", "user_id": "u", "role": "r",'
         b' "text": "x", "created_at": "2026-03-04 05:06:07Z"}]}}', "space in a timestamp"),
        (b'{"threads": {} ', "truncated"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'{"threads": {"\xff": 1}}', "invalid UTF-8"),
    ],
)
def test_typed_path_declines_what_it_cannot_keep_or_prove(text: bytes, why: str) -> None:
    with pytest.raises(typed.Declined):
        typed.decode(store_kind("codex_threads"), text)


def test_u64_ceiling_is_checked_in_bulk() -> None:
    kind = store_kind("domain")
    row = {"id": 2**64 - 1, "user_id": "u", "body": "b", "visibility": "v",
           "created_at": "2026-03-04T05:06:07Z", "updated_at": "2026-03-04T05:06:07Z"}
    assert typed.decode(kind, jsonio.encode({"shouts": [row]}))["shouts"][0].id == 2**64 - 1
    row["id"] = 2**64
    with pytest.raises(typed.Declined, match="u64"):
        typed.decode(kind, jsonio.encode({"shouts": [row]}))


def test_year_zero_is_readable_and_takes_the_general_path() -> None:
    """RFC 3339 allows year 0000; msgspec's datetime parser does not, so the typed decode declines
    and the general path (same verdict, same bytes) takes the store."""
    kind = store_kind("codex_threads")
    text = jsonio.encode({"messages_by_thread": {"t": [{
        "message_id": "m", "thread_id": "t", "user_id": "u", "role": "r", "text": "x",
        "created_at": "0000-01-01T00:00:00Z"}]}})
    with pytest.raises(typed.Declined):
        typed.decode(kind, text)
    assert validate.validate("codex_threads", jsonio.decode(text), text).readable
