"""Nothing dropped without a word, through the CLI: integers of any size come back exactly, and
counters count by value or refuse the store (duplicate members: test_duplicates.py; each counter
and id rule on its own: test_transform.py)."""

from __future__ import annotations

import json
import os
import random
import tempfile
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import STORE_FILES, STORE_VARS, Stores
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_duplicates import Obj, Writer

from store_migrate.commands import run as cmd_run
from store_migrate.core import config, transform
from store_migrate.core.stores import store_kind
from store_migrate.core.transform import by_value
from store_migrate.errors import StoreRefused
from store_migrate.readable import jsonio

GIANT = "9" * 4000 + "1234567890" * 600  # 10,000 digits


def test_a_10000_digit_integer_is_kept_byte_for_byte_by_a_run_and_a_rerun(stores: Stores) -> None:
    stores.write("codex_threads", f'{{"threads": {{}}, "zz_kept": [{GIANT}, -{GIANT}, 1.5, "x"]}}')
    stores.call("store-migrate", "run", check=0)
    written = stores.paths["codex_threads"].read_text()
    assert f"\n    {GIANT},\n    -{GIANT},\n    1.5," in written
    os.utime(stores.paths["codex_threads"])  # another identity: the rerun hashes the store again
    again = stores.call("store-migrate", "run", check=0)
    assert stores.paths["codex_threads"].read_text() == written, again.stderr
    assert len(stores.manifests()) == 1, "the rerun found every store migrated and wrote nothing"
    stores.call("store-migrate", "check", "--kind", "codex_threads", str(stores.paths["codex_threads"]), check=0)


def test_the_longest_integer_msgspec_reads_and_the_shortest_it_does_not_both_round_trip() -> None:
    for text in ("1" * 4300, "-" + "1" * 4299, "1" * 4301, "-" + "1" * 4300, "1" * 100_000):
        data = f'{{"a": [{text}, 2.5e-7, -0.0, "é"], "b": {{"c": {text}}}}}'.encode()
        value = jsonio.decode(data)
        assert value["a"][0] == int(text) and value["b"]["c"] == int(text)
        assert jsonio.encode(value) == jsonio.indent(data)  # already in canonical key order


@pytest.mark.parametrize(("tail", "reason"), [
    ("1e400]", "a number is outside the range of a double"),
    ("NaN]", "NaN or Infinity"),
    ("1", "Expecting ',' delimiter"),
    ('"\\ud800"]', "lone surrogate escape"),
    ('"\xff"]', "invalid UTF-8"),
    ("1] x", "Extra data"),
    ("01]", "Expecting ',' delimiter"),
    ('"a\tb"]', "Invalid control character"),
])
def test_a_store_with_a_giant_integer_is_parsed_as_strictly_as_any_other(tail: str, reason: str) -> None:
    data = f'[{GIANT}, {tail}'.encode("latin-1" if "\xff" in tail else "utf-8")
    with pytest.raises(jsonio.JsonError) as refused:
        jsonio.decode(data)
    assert reason in refused.value.reason
    assert "range of a double" not in refused.value.reason or "1e400" in tail


def test_a_truncated_store_with_a_giant_integer_is_refused_for_what_is_wrong(stores: Stores) -> None:
    path = stores.write("auth", f'{{"sessions": {{}}, "x": {GIANT}')  # the closing brace is missing
    done = stores.call("store-migrate", "run", check=1)
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"refusing to migrate {path}: Expecting ',' delimiter at line 1" in error[0], error
    assert path.read_text().endswith(GIANT) and not stores.work.exists()
    done = stores.call("store-migrate", "check", "--kind", "auth", str(path), check=1)
    assert "does not parse: Expecting ',' delimiter" in done.stdout and "double" not in done.stdout


@pytest.mark.parametrize(("counter", "why"), [
    ("-7", "is a negative integer"),
    ("18446744073709551616", "is an integer above 2^64-1"),
    ("1234.5", "is a number with a fraction"),
    ('"12x34"', "is a string other than an optional '+' and ASCII digits"),
    ('{"kept": 1234}', "is an object"),
    ("[1234]", "is an array"),
    ("true", "is a boolean"),
])
def test_a_counter_that_does_not_count_refuses_the_run_naming_it_but_not_its_value(
    stores: Stores, counter: str, why: str
) -> None:
    original = f'{{"shouts": [{{"id": 41}}], "next_shout_id": {counter}}}'
    path = stores.write("domain", original)
    done = stores.call("store-migrate", "run", check=1)
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert error == [f"error: refusing to migrate {path}: counter 'next_shout_id' {why}; replacing it could "
                     "hand out ids again or lose what it holds at $.next_shout_id"], done.stderr
    assert "1234" not in done.stderr and "-7" not in done.stderr and "12x34" not in done.stderr
    assert path.read_text() == original and not stores.work.exists()


@pytest.mark.parametrize("counter", ["1000", "1000.0", "1e3", '"1000"', '"+1000"'])
def test_a_counter_written_any_way_counts_by_value_and_never_goes_down(stores: Stores, counter: str) -> None:
    path = stores.write("domain", f'{{"shouts": [{{"id": 41}}], "next_shout_id": {counter}}}')
    stores.call("store-migrate", "run", check=0)
    assert '\n  "next_shout_id": 1000,\n' in path.read_text()


# -------------------------------------------- a run refuses, or keeps every member and value

DOMAIN = store_kind("domain")
ODD = (
    st.integers(-3, 2**64 + 3) | st.integers(0, 2**60).map(float) | st.floats(-2, 1e25, allow_nan=False)
    | st.sampled_from(["7", "+8", "007", " 9", "x", "", "1e3", "4_0", True, False, None, [], {}, [5], {"n": 5}])
    | st.text(alphabet="+09:a", max_size=4)
)
"""Counters and ids, most of them odd."""
ROW = st.lists(st.tuples(st.sampled_from(["id", "id", "body", "x:y"]), ODD), max_size=4).map(Obj)
"""Rows whose field names repeat now and then."""
TOP_NAMES = [*DOMAIN.containers, *(c.name for c in DOMAIN.counters), "zz_unknown"]


def _top_value(name: str) -> st.SearchStrategy[Any]:
    if name in DOMAIN.containers:
        keyed = st.lists(st.tuples(st.sampled_from(["a", "b", "c:d"]), ROW), max_size=4).map(Obj)
        rows = keyed if DOMAIN.containers[name] == "object" else st.lists(ROW, max_size=4)
        return rows | st.sampled_from([None, [], {}])
    return ODD


STORES = st.lists(
    st.sampled_from(TOP_NAMES).flatmap(lambda name: _top_value(name).map(lambda value: (name, value))),
    max_size=10,
).map(Obj)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # tells 1 from 1.0 and from true, and -0.0 from 0.0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STORES, st.randoms(use_true_random=False))
def test_a_run_refuses_with_nothing_written_or_its_output_holds_every_member_and_value(
    store: Obj, rng: random.Random
) -> None:
    writer = Writer(rng)
    text = writer.text(store)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {kind: os.path.join(tmp, name) for kind, name in STORE_FILES.items()}
        with open(paths["domain"], "wb") as handle:
            handle.write(text)
        environ = {STORE_VARS[kind]: path for kind, path in paths.items()} | {"WORK_DIR": os.path.join(tmp, "work")}
        try:
            cmd_run.run(config.resolve(environ=environ, cwd=tmp), clock=lambda: datetime(2026, 1, 2, tzinfo=UTC))
        except StoreRefused:
            with open(paths["domain"], "rb") as handle:
                assert handle.read() == text
            assert sorted(os.listdir(tmp)) == [STORE_FILES["domain"]], "nothing written"
            refused = True
        else:
            with open(paths["domain"], "rb") as handle:
                out = json.loads(handle.read())
            refused = False
    members = [name for name, _ in store.members]
    values = dict(store.members)
    countable = all(
        values.get(c.name) is None
        or (type(by_value(values[c.name])) is int
            and not (type(values[c.name]) is float and values[c.name] >= transform.EXACT_DOUBLES))
        for c in DOMAIN.counters
    )
    fitting = all(
        values.get(k) in (None, [], {}) or isinstance(values[k], Obj if kind == "object" else list)
        for k, kind in DOMAIN.containers.items()
    )
    assert refused is (bool(writer.repeats) or not countable or not fitting)
    event("refused: " + ", ".join(why for why, bad in (("repeated name", writer.repeats), ("counter", not countable),
                                                     ("container", not fitting)) if bad) if refused else "kept")
    if refused:
        return
    original = json.loads(text)  # no name repeats: the standard library reads every member
    assert len(original) == len(members)
    for name, held in original.items():
        if name in DOMAIN.containers and held in (None, [], {}):
            assert out[name] == ({} if DOMAIN.containers[name] == "object" else [])
        elif name.startswith("next_"):
            assert type(out[name]) is int and out[name] >= (0 if held is None else by_value(held))
        else:
            assert _canonical(out[name]) == _canonical(held)
    for counter in DOMAIN.counters:
        ids = [transform.row_id(row) for row in transform.rows_of(out[counter.rows_key])]
        assert all(out[counter.name] > i for i in ids if i < transform.U64_MAX)
    assert set(out) == set(original) | set(DOMAIN.containers) | {c.name for c in DOMAIN.counters}
