"""Rules that must hold for all inputs, checked with hypothesis.

The canonical encoder is compared with an independent reference written from the contract's
description of the byte format, so a change in msgspec's output would be caught here.
"""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from store_migrate.core import transform
from store_migrate.core.stores import store_kind
from store_migrate.core.transform import U64_MAX, ShapeRefusal
from store_migrate.readable import jsonio

# ----------------------------------------------------------------------- reference encoder

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def ref_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def ref_float(x: float) -> str:
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    decimal = Decimal(repr(abs(x))).as_tuple()  # repr: the shortest digits that read back
    digits = "".join(map(str, decimal.digits))
    p = len(digits) + int(decimal.exponent)
    d = digits.rstrip("0")
    n = len(d)
    if 0 < p <= 16:
        body = d + "0" * (p - n) + ".0" if n <= p else d[:p] + "." + d[p:]
    elif -5 < p <= 0:
        body = "0." + "0" * (-p) + d
    else:
        body = f"{d}e{p - 1}" if n == 1 else f"{d[0]}.{d[1:]}e{p - 1}"
    return sign + body


def ref_encode(value: Any, level: int = 0) -> str:
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        members = [f"{inner}{ref_string(k)}: {ref_encode(v, level + 1)}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(members) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + ref_encode(v, level + 1) for v in value) + "\n" + pad + "]"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ref_float(value)
    return ref_string(value)


def test_reference_float_layout_matches_the_contract_examples() -> None:
    cases = {1e15: "1000000000000000.0", 2.5: "2.5", 1e-5: "0.00001", 1.2345e-5: "0.000012345",
             1e16: "1e16", 1e-6: "1e-6", 1.5e16: "1.5e16", 1.7976931348623157e308: "1.7976931348623157e308",
             -0.0: "-0.0", 100.0: "100.0", 5e-324: "5e-324"}
    assert {x: ref_float(x) for x in cases} == cases


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_canonical_bytes_follow_the_contract(value: Any) -> None:
    encoded = jsonio.encode(value)
    assert encoded == ref_encode(value).encode("utf-8")
    assert not encoded.endswith(b"\n")
    assert jsonio.decode(encoded) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(x: float) -> None:
    decoded = jsonio.decode(jsonio.encode([x]))[0]
    assert decoded == x and math.copysign(1, decoded) == math.copysign(1, x)


@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
)
def test_number_parsing_is_exact(text: str) -> None:
    reference = json.loads(text)  # the standard library parses integers exactly, floats correctly rounded
    assume(not (isinstance(reference, float) and math.isinf(reference)))
    parsed = jsonio.decode(text.encode())
    assert parsed == reference and type(parsed) is type(reference)


# ----------------------------------------------------------------------- the transform

row_ids = (
    st.integers(min_value=-5, max_value=2**64 + 5)
    | st.integers(min_value=0, max_value=2**64 + 5).map(str)
    | st.integers(min_value=0, max_value=99).map(lambda i: f"+{i}")
    | st.integers(min_value=0, max_value=2**65).map(float)
    | st.floats(min_value=-3, max_value=1e30, allow_nan=False)
    | st.sampled_from([" 4", "4_0", "", "+", True, None, 3.0, "x", [], {}, [1], {"a": 1}])
)
rows = st.one_of(st.fixed_dictionaries({"id": row_ids}, optional={"body": st.text(max_size=5)}), scalars)


def store_values(kind_name: str) -> st.SearchStrategy[dict[str, Any]]:
    kind = store_kind(kind_name)
    members: dict[str, st.SearchStrategy[Any]] = {}
    for key, container in kind.containers.items():
        proper = (
            st.dictionaries(st.text(max_size=4), rows, max_size=4)
            if container == "object"
            else st.lists(rows, max_size=4)
        )
        members[key] = proper | st.just(None) | st.just([] if container == "object" else {})
    for counter in kind.counters:
        members[counter.name] = row_ids
    unknown = st.dictionaries(st.text(min_size=1, max_size=5).map(lambda k: "zz" + k), json_values, max_size=2)
    return st.tuples(st.fixed_dictionaries({}, optional=members), unknown).map(lambda t: {**t[1], **t[0]})


def check_transform(kind_name: str, value: dict[str, Any]) -> None:
    kind = store_kind(kind_name)
    original = copy.deepcopy(value)
    countable = {
        c.name: original.get(c.name) is None or (
            type(transform.by_value(original[c.name])) is int
            and not (type(original[c.name]) is float and original[c.name] >= transform.EXACT_DOUBLES)
        )
        for c in kind.counters
    }
    try:
        first = jsonio.encode(transform.backfill(kind, value).value)
    except ShapeRefusal as refused:  # only for a counter that does not count by value
        assert refused.pointer.removeprefix("$.") in countable and not countable[refused.pointer[2:]]
        return
    assert all(countable.values())
    out = jsonio.decode(first)
    # idempotent on bytes
    assert jsonio.encode(transform.backfill(kind, jsonio.decode(first)).value) == first
    # never drops a row or an unknown key
    for key, held in original.items():
        if key in kind.containers and held in (None, [], {}):
            assert out[key] in ([], {})
        elif not key.startswith("next_") or key not in out:
            assert out[key] == held
    # every counter above every id, never below what it was
    for counter in kind.counters:
        ids = [transform.row_id(r) for r in transform.rows_of(out[counter.rows_key])]
        assert all(out[counter.name] > i for i in ids if i < U64_MAX)
        assert out[counter.name] >= transform.counter_value(counter.name, original.get(counter.name))
    assert transform.shape_problems(kind, out) == []


@settings(max_examples=150)
@given(store_values("domain"))
def test_domain_transform_is_idempotent_and_keeps_every_row(value: dict[str, Any]) -> None:
    check_transform("domain", value)


@settings(max_examples=75)
@given(store_values("auth"))
def test_auth_transform_is_idempotent_and_keeps_every_row(value: dict[str, Any]) -> None:
    check_transform("auth", value)


@settings(max_examples=75)
@given(store_values("codex_threads"))
def test_codex_transform_is_idempotent_and_keeps_every_row(value: dict[str, Any]) -> None:
    check_transform("codex_threads", value)


@given(st.sampled_from(["auth", "codex_threads", "domain"]), st.data())
def test_wrong_non_empty_containers_are_always_refused(kind_name: str, data: st.DataObject) -> None:
    kind = store_kind(kind_name)
    key = data.draw(st.sampled_from(sorted(kind.containers)))
    other = (
        st.lists(scalars, min_size=1, max_size=3)
        if kind.containers[key] == "object"
        else st.dictionaries(st.text(max_size=3), scalars, min_size=1, max_size=3)
    )
    wrong = data.draw(other | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False))
    try:
        transform.backfill(kind, {key: wrong})
    except ShapeRefusal as refused:
        assert refused.pointer == f"$.{key}"
    else:
        raise AssertionError(f"{key}={wrong!r} was not refused")


@settings(max_examples=150)
@given(st.sampled_from(["auth", "codex_threads", "domain"]), st.data())
def test_summary_from_bytes_agrees_with_a_full_parse(kind_name: str, data: st.DataObject) -> None:
    from store_migrate.readable import summary

    kind = store_kind(kind_name)
    value = data.draw(store_values(kind_name))
    if data.draw(st.booleans()):
        try:
            value = transform.backfill(kind, value).value
        except ShapeRefusal:  # a counter that does not count by value
            assume(False)
    encoded = jsonio.encode(value)
    quick = summary.summarize(kind, encoded)
    parsed = jsonio.decode(encoded)
    rows_are_objects = all(
        isinstance(row, dict) for c in kind.counters for row in transform.rows_of(parsed.get(c.rows_key))
    )
    containers_typed = all(
        k not in parsed or isinstance(parsed[k], {"object": dict, "array": list}[t]) for k, t in kind.containers.items()
    )
    nested_are_lists = all(
        isinstance(items, list)
        for spec in kind.counts if spec.method == "items_of_entries"
        for items in transform.rows_of(parsed.get(spec.key))
    )
    if rows_are_objects and containers_typed and nested_are_lists:
        assert quick is not None
    if quick is not None:
        assert quick.counts == transform.counts(kind, parsed)
        assert quick.shape_problems == transform.shape_problems(kind, parsed)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=4), json_values, max_size=5), st.integers(1, 3))
def test_canonical_pieces_join_to_the_canonical_bytes(value: dict[str, Any], batch: int) -> None:
    pieces = jsonio.CanonicalPieces(value, batch)
    joined = b"".join(pieces)
    assert joined == jsonio.encode(value)
    assert pieces.too_deep == jsonio.nesting_too_deep(joined)


def test_canonical_pieces_find_deep_nesting_inside_a_batch() -> None:
    deep: Any = 1
    for _ in range(jsonio.MAX_DEPTH - 2):
        deep = [deep]
    value = {"rows": [0, 1, 2, deep, 4]}  # the root is level 1, so `deep` reaches level 128
    pieces = jsonio.CanonicalPieces(value, batch=2)
    assert b"".join(pieces) == jsonio.encode(value)
    assert pieces.too_deep and jsonio.nesting_too_deep(jsonio.encode(value))
    shallow = {"rows": [0, 1, 2, deep[0], 4]}
    pieces = jsonio.CanonicalPieces(shallow, batch=2)
    b"".join(pieces)
    assert not pieces.too_deep
