"""One test per rule of the backfill transform (README: "What the backfill does")."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_migrate.core import transform
from store_migrate.core.stores import store_kind
from store_migrate.core.transform import U64_MAX, ShapeRefusal, backfill
from store_migrate.readable import jsonio

DOMAIN = store_kind("domain")
AUTH = store_kind("auth")


def next_shout(rows: list[Any], counter: Any = None, *, present: bool = False) -> int:
    store: dict[str, Any] = {"shouts": rows}
    if present or counter is not None:
        store["next_shout_id"] = counter
    return int(backfill(DOMAIN, store).value["next_shout_id"])


# --- which ids count -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("row_id", "expected_next"),
    [
        (0, 1),
        (7, 8),
        (U64_MAX - 1, U64_MAX),
        ("5", 6),
        ("007", 8),
        ("+8", 9),
        ("0" * 5000 + "9", 10),
        (str(U64_MAX - 1), U64_MAX),
        (41.0, 42),
        (1e3, 1001),
        (-0.0, 1),
        (2.0**60, 2**60 + 1),
    ],
)
def test_ids_count_by_value(row_id: Any, expected_next: int) -> None:
    assert next_shout([{"id": row_id}]) == expected_next


@pytest.mark.parametrize(
    "row_id",
    [True, False, None, 0.5, -1.0, 1e300, 2.0**64, -1, -50, U64_MAX + 1, " 40", "40 ", "4_0", "", "+", "-5",
     "++5", "0x10", "1e3", "1.0", "\u0663", str(U64_MAX + 1), "9" * 10_000, [5], {"n": 5}],
    ids=lambda v: repr(v)[:30],
)
def test_odd_ids_count_as_zero(row_id: Any) -> None:
    assert next_shout([{"id": row_id}]) == 1


@pytest.mark.parametrize("row", [5, "5", None, [{"id": 9}], {"other": 9}], ids=repr)
def test_rows_that_are_not_objects_or_lack_an_id_count_as_zero(row: Any) -> None:
    assert next_shout([row]) == 1


def test_map_rows_use_the_values_not_the_keys() -> None:
    value = backfill(DOMAIN, {"user_integrations": {"99": {"id": 4}, "x": {"id": "6"}}}).value
    assert value["next_user_integration_id"] == 7


def test_max_over_no_rows_gives_one_for_every_counter() -> None:
    value = backfill(DOMAIN, {}).value
    assert [value[c.name] for c in DOMAIN.counters] == [1] * 6


def test_each_counter_follows_its_own_rows() -> None:
    store = {c.rows_key: ([{"id": i * 10}] if DOMAIN.containers[c.rows_key] == "array" else {"k": {"id": i * 10}})
             for i, c in enumerate(DOMAIN.counters, start=1)}
    value = backfill(DOMAIN, store).value
    assert [value[c.name] for c in DOMAIN.counters] == [i * 10 + 1 for i in range(1, 7)]


# --- counters ------------------------------------------------------------------------------

def test_missing_counter_is_added() -> None:
    assert next_shout([{"id": 3}]) == 4


def test_zero_counter_is_raised() -> None:
    assert next_shout([], 0) == 1


def test_counter_ahead_of_every_id_is_kept() -> None:
    assert next_shout([{"id": 3}], 100) == 100


@pytest.mark.parametrize("stale", [3, 4, 12])
def test_stale_counter_is_raised_above_the_highest_id(stale: int) -> None:
    assert next_shout([{"id": 3}, {"id": 12}], stale) == 13


@pytest.mark.parametrize("counter", [1000, 1000.0, 1e3, "1000", "+1000", "0001000"], ids=repr)
def test_a_counter_counts_by_value_however_it_is_written(counter: Any) -> None:
    assert next_shout([{"id": 41}], counter) == 1000
    result = backfill(DOMAIN, {"shouts": [{"id": 41}], "next_shout_id": counter})
    assert type(result.value["next_shout_id"]) is int
    changed = [c for c in result.counters if c.name == "next_shout_id"]
    assert changed == ([] if type(counter) is int else [transform.CounterChange("next_shout_id", counter, 1000)])


@pytest.mark.parametrize(("counter", "why"), [
    (-1, "is a negative integer"),
    (U64_MAX + 1, "is an integer above 2^64-1"),
    (0.5, "is a number with a fraction"),
    (-3.0, "is a negative number"),
    (1e300, "is a number above 2^64-1"),
    (2.0**64, "is a number above 2^64-1"),
    (2.0**53, "at or above 2^53"),
    (1e16, "at or above 2^53"),
    ("1e3", "is a string other than an optional '+' and ASCII digits"),
    (" 5", "is a string other than an optional '+' and ASCII digits"),
    ("", "is a string other than an optional '+' and ASCII digits"),
    (str(U64_MAX + 1), "is a string of digits above 2^64-1"),
    (True, "is a boolean"),
    ({}, "is an object"),
    ({"n": 5}, "is an object"),
    ([], "is an array"),
    ([100], "is an array"),
], ids=repr)
def test_a_counter_holding_anything_else_refuses_the_store(counter: Any, why: str) -> None:
    with pytest.raises(ShapeRefusal) as refused:
        next_shout([{"id": 3}], counter)
    assert refused.value.pointer == "$.next_shout_id"
    assert refused.value.reason.startswith(f"counter 'next_shout_id' {why}") or why in refused.value.reason
    if not isinstance(counter, bool) and isinstance(counter, (int, float)):
        assert repr(counter) not in refused.value.reason and str(int(counter)) not in refused.value.reason


def test_the_largest_counter_a_double_holds_exactly_counts() -> None:
    assert next_shout([{"id": 3}], 2.0**53 - 1) == 2**53 - 1


def test_null_counter_counts_as_zero() -> None:
    assert next_shout([{"id": 3}], None, present=True) == 4


def test_counter_saturates_at_u64_max() -> None:
    assert next_shout([{"id": U64_MAX}]) == U64_MAX
    assert next_shout([{"id": U64_MAX}], U64_MAX) == U64_MAX


def test_counter_never_goes_down() -> None:
    assert next_shout([{"id": 3}], U64_MAX) == U64_MAX


# --- containers ----------------------------------------------------------------------------

def test_absent_keys_are_added_with_their_container_type() -> None:
    result = backfill(AUTH, {})
    assert all(result.value[k] == {} for k in AUTH.containers)
    assert sorted(result.added_keys) == sorted(AUTH.containers)


@pytest.mark.parametrize(("key", "given", "expected"), [
    ("autopilots", None, {}),
    ("autopilots", [], {}),
    ("shouts", None, []),
    ("shouts", {}, []),
])
def test_null_and_other_empty_container_are_replaced(key: str, given: Any, expected: Any) -> None:
    result = backfill(DOMAIN, {key: given})
    assert result.value[key] == expected and type(result.value[key]) is type(expected)
    assert result.replaced_keys == [key]


@pytest.mark.parametrize(("key", "given"), [
    ("autopilots", [{"id": "a"}]),
    ("shouts", {"s": {"id": 1}}),
    ("autopilots", "text"),
    ("autopilots", 0),
    ("shouts", False),
])
def test_wrong_non_empty_values_are_refused(key: str, given: Any) -> None:
    with pytest.raises(ShapeRefusal) as refused:
        backfill(DOMAIN, {key: given})
    assert refused.value.pointer == f"$.{key}"


@pytest.mark.parametrize("root", [[], [{}], "x", 1, None, True])
def test_root_that_is_not_an_object_is_refused(root: Any) -> None:
    with pytest.raises(ShapeRefusal) as refused:
        backfill(AUTH, root)
    assert refused.value.pointer == "$"


def test_unknown_keys_and_existing_rows_are_kept_untouched() -> None:
    rows = {"u1": {"id": "u1", "extra": [1, 2.5, None, {"deep": "x"}]}}
    value = backfill(AUTH, {"users_by_id": rows, "zz_unknown": {"a": [None]}, "aa": 1}).value
    assert value["users_by_id"] == {"u1": {"id": "u1", "extra": [1, 2.5, None, {"deep": "x"}]}}
    assert value["zz_unknown"] == {"a": [None]} and value["aa"] == 1


def test_counts_match_the_manifest_definitions() -> None:
    codex = store_kind("codex_threads")
    value = backfill(codex, {"threads": {"a": {}, "b": {}}, "messages_by_thread": {"a": [1, 2, 3], "b": [4], "c": "x"}}).value
    assert transform.counts(codex, value) == {"threads": 2, "messages": 4}
    domain = backfill(DOMAIN, {"user_integrations": {"a": {}}, "shouts": [{}, {}]}).value
    assert transform.counts(DOMAIN, domain) == {
        "autopilots": 0, "l402_paywalls": 0, "integrations": 1, "shouts": 2, "whispers": 0}


def test_shape_problems_find_stale_counters_and_missing_keys() -> None:
    value = backfill(DOMAIN, {"shouts": [{"id": 3}]}).value
    assert transform.shape_problems(DOMAIN, value) == []
    value["next_shout_id"] = 3
    del value["whispers"]
    problems = transform.shape_problems(DOMAIN, value)
    assert any("'whispers' is missing" in p for p in problems)
    assert any("'next_shout_id' is 3" in p for p in problems)


@pytest.mark.parametrize("depth", [127, 128])
def test_nesting_of_128_levels_is_refused_and_127_is_not(depth: int) -> None:
    # The root object is level 1; `depth - 1` more arrays inside an unknown key.
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    value = backfill(AUTH, jsonio.decode(f'{{"x": {inner}}}'.encode())).value
    assert jsonio.nesting_too_deep(jsonio.encode(value)) is (depth >= 128)


@pytest.mark.parametrize("depth", [127, 128, 129, 300])
def test_depth_check_agrees_with_a_walk_for_objects_and_strings(depth: int) -> None:
    value: Any = "leaf with [ { brackets"
    for level in range(depth - 1):
        value = {'k"[{' + str(level): value} if level % 2 else [value, "s"]
    document = {"x": value}

    def walk(node: Any) -> int:
        if isinstance(node, dict):
            return 1 + max((walk(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return 1 + max((walk(v) for v in node), default=0)
        return 0

    assert jsonio.nesting_too_deep(jsonio.encode(document)) is (walk(document) >= 128)


class _Row(msgspec.Struct):
    id: Any = msgspec.UNSET


class _NoId(msgspec.Struct):
    body: str = ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-3, max_value=3) | st.integers(min_value=U64_MAX - 2, max_value=U64_MAX + 2)
                | st.integers(min_value=-3, max_value=2**70) | st.sampled_from(
                    [msgspec.UNSET, None, True, False, 7.0, "9", "+3"]), max_size=8), st.booleans(), st.booleans())
def test_ids_of_structs_count_as_those_of_dicts(ids: list[Any], as_map: bool, odd_row: bool) -> None:
    """Rows decoded as structs (typed.py, summary.py) take a path without a call per row; it
    counts exactly as row_id does for the same rows as dicts."""
    structs: list[Any] = [_Row(i) for i in ids] + ([_NoId()] if odd_row else [])
    dicts: list[Any] = [{} if i is msgspec.UNSET else {"id": i} for i in ids] + ([{"body": ""}] if odd_row else [])
    if as_map:
        structs_in: Any = {str(n): row for n, row in enumerate(structs)}
        dicts_in: Any = {str(n): row for n, row in enumerate(dicts)}
    else:
        structs_in, dicts_in = structs, dicts
    expected = min(max((transform.row_id(r) for r in dicts), default=0) + 1, U64_MAX)
    assert transform.next_id(structs_in) == transform.next_id(dicts_in) == expected
