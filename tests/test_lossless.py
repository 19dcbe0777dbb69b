"""Nothing dropped without a word, through the CLI: integers of any size come back exactly, and
counters count by value or refuse the store (duplicate members: test_duplicates.py; each counter
and id rule on its own: test_transform.py)."""

from __future__ import annotations

import pytest
from conftest import Stores, load_json

from store_migrate import jsonio

GIANT = "9" * 4000 + "1234567890" * 600  # 10,000 digits


def test_a_10000_digit_integer_is_kept_byte_for_byte_by_a_run_and_a_rerun(stores: Stores) -> None:
    stores.write("codex_threads", f'{{"threads": {{}}, "zz_kept": [{GIANT}, -{GIANT}, 1.5, "x"]}}')
    stores.call("store-migrate", "run", check=0)
    written = stores.paths["codex_threads"].read_text()
    assert f"\n    {GIANT},\n    -{GIANT},\n    1.5," in written
    again = stores.call("store-migrate", "run", check=0)
    assert stores.paths["codex_threads"].read_text() == written, again.stderr
    entry = next(e for e in load_json(stores.newest_manifest())["stores"] if e["store"] == "codex_threads")
    assert entry["changed"] is False
    stores.call("store-migrate", "check", "--kind", "codex_threads", str(stores.paths["codex_threads"]), check=0)


def test_the_longest_integer_msgspec_reads_and_the_shortest_it_does_not_both_round_trip() -> None:
    for text in ("1" * 4300, "-" + "1" * 4299, "1" * 4301, "-" + "1" * 4300, "1" * 100_000):
        data = f'{{"a": [{text}, 2.5e-7, -0.0, "é"], "b": {{"c": {text}}}}}'.encode()
        value = jsonio.decode(data)
        assert value["a"][0] == int(text) and value["b"]["c"] == int(text)
        assert jsonio.encode(value) == jsonio.indent(data)  # already in canonical key order


@pytest.mark.parametrize(("tail", "reason"), [
    ("1e400]", "number 1e400 is outside the range of a double"),
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
