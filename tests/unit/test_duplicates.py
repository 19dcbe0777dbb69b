"""Objects that name a member twice (duplicates.py): the colon count finds exactly them, the scan
names them (path with map keys by position, line, column), and run, check and verify act on them.

JSON texts here are written by `Writer`, which can repeat names and writes every string with
randomly chosen escapes (`\\u003a` for `:` among them) and random whitespace, and records where
each member's name starts: the reference for what the detector must find."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import RUN, VERIFY, Stores, load_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store_migrate.core.stores import store_kind
from store_migrate.fs import workers
from store_migrate.readable import duplicates, jsonio, validate

AUTH = store_kind("auth")


@dataclass
class Obj:
    """A JSON object as written: its members in order, names possibly repeated."""

    members: list[tuple[str, Any]]


@dataclass
class Writer:
    """JSON text for a tree of Obj, lists and scalars, and the members that repeat a name:
    (offset of the repeated name, steps to its object) in text order."""

    rng: random.Random
    out: list[str] = field(default_factory=list)
    size: int = 0
    repeats: list[tuple[int, list[tuple[Obj | None, Any]]]] = field(default_factory=list)

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.size += len(text.encode("utf-8", "surrogatepass"))

    def space(self) -> None:
        self.emit("".join(self.rng.choice(" \t\n\r") for _ in range(self.rng.choice((0, 0, 0, 1, 2)))))

    def string(self, text: str) -> None:
        parts = ['"']
        for ch in text:
            code = ord(ch)
            short = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                     "\t": "\\t"}.get(ch)
            choice = self.rng.random()
            if code > 0xFFFF:
                high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
                parts.append(ch if choice < 0.5 else f"\\u{high:04x}\\u{low:04X}")
            elif short is not None and (ch in '"\\' or code < 0x20 or choice < 0.3):
                parts.append(short if choice < 0.6 else f"\\u{code:04{'x' if choice < 0.8 else 'X'}}")
            elif code < 0x20 or choice < 0.25:
                parts.append(f"\\u{code:04{'x' if self.rng.random() < 0.5 else 'X'}}")
            else:
                parts.append(ch)
        self.emit("".join(parts) + '"')

    def value(self, node: Any, path: list[tuple[Obj | None, Any]]) -> None:
        self.space()
        if isinstance(node, Obj):
            self.emit("{")
            seen: set[str] = set()
            for index, (name, child) in enumerate(node.members):
                if index:
                    self.emit(",")
                self.space()
                if name in seen:
                    self.repeats.append((self.size, list(path)))
                seen.add(name)
                self.string(name)
                self.space()
                self.emit(":")
                self.value(child, [*path, (node, name)])
            self.space()
            self.emit("}")
        elif isinstance(node, list):
            self.emit("[")
            for index, child in enumerate(node):
                if index:
                    self.emit(",")
                self.value(child, [*path, (None, index)])
            self.space()
            self.emit("]")
        elif isinstance(node, str):
            self.string(node)
        else:
            self.emit(json.dumps(node))
        self.space()

    def text(self, node: Any) -> bytes:
        self.value(node, [])
        return "".join(self.out).encode("utf-8", "surrogatepass")


def expected_pointer(steps: list[tuple[Obj | None, Any]]) -> str:
    """For trees whose names are none of the auth schema's: every name by its position."""
    text = "$"
    for obj, step in steps:
        text += f"[{step}]" if obj is None else f"[#{sorted({n for n, _ in obj.members}).index(step)}]"
    return text


NAMES = st.text(alphabet="a:\"\\/é\n\U0001f600", max_size=2)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=":ab\\\"u3\t\U0001f600é", max_size=6)
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.lists(st.tuples(NAMES, children), max_size=4).map(Obj),
    max_leaves=25,
)
ROOTS = st.lists(st.tuples(NAMES.map(lambda n: "x" + n), TREES), max_size=5).map(Obj)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(ROOTS, st.randoms(use_true_random=False))
def test_the_colon_count_finds_exactly_the_texts_that_repeat_a_name_and_the_scan_names_each(
    root: Obj, rng: random.Random
) -> None:
    writer = Writer(rng)
    text = writer.text(root)
    parsed = jsonio.decode(text)
    assert (duplicates.written(text) == duplicates.tree_colons(parsed)) is (not writer.repeats)
    assert duplicates.written(memoryview(text)) == duplicates.written(text)
    found = duplicates.locate(text, AUTH, limit=100)
    expected = [(expected_pointer(steps), offset) for offset, steps in writer.repeats]
    assert [(d.pointer, d.offset) for d in found] == expected
    assert all(d.record is (d.pointer == "$") for d in found)  # only the root is a record of the schema


@given(st.text(alphabet='\\u003aA":x', max_size=12), st.integers(0, 3))
def test_escaped_colons_are_counted_by_the_parity_of_the_backslashes_before_them(text: str, pad: int) -> None:
    encoded = json.dumps(text)  # a valid string literal (json.dumps escapes backslashes and quotes)
    for literal in (encoded, encoded.replace(":", "\\u003a"), encoded.replace(":", "\\u003A")):
        document = ("[" + " " * pad + literal + "]").encode()
        assert duplicates.written(document) == json.loads(document)[0].count(":")


def test_an_escape_across_the_boundary_of_a_mapped_chunk_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duplicates, "_CHUNK", 8)
    for shift in range(12):
        document = ("[" + " " * shift + '"\\u003a", "x:\\\\u003a\\\\\\u003A"]').encode()
        colons = sum(item.count(":") for item in json.loads(document))
        assert colons == 3 and duplicates.written(memoryview(document)) == duplicates.written(document) == colons


def test_pointers_name_schema_fields_and_map_members_by_position() -> None:
    cases = {
        '{"sessions": {"b": {}, "a": {"status": "x", "status": "y"}}}': ("$.sessions[#0]", True),
        '{"sessions": {"s": {}, "s": {}}}': ("$.sessions", False),
        '{"users_by_id": {}, "users_by_id": {}}': ("$", True),
        '{"zz": {"q": 1, "\\u0071": 2}}': ("$[#0]", False),
        '{"personal_access_tokens": {"t": {"scopes": [{}, {"k": 1, "k": 1}]}}}': (
            "$.personal_access_tokens[#0].scopes[1]", False),
    }
    for text, (pointer, record) in cases.items():
        found = duplicates.locate(text.encode(), AUTH)
        assert [(d.pointer, d.record) for d in found] == [(pointer, record)], text


# --------------------------------------------------------------------------- through the CLI

SESSION = {
    "session_id": "sess-1", "user_id": "user-1", "email": "secret-mail@example.com", "device_id": "d",
    "token_name": "cli", "active_org_id": "org-1", "access_token": "oa_at_SECRET", "refresh_token": "oa_rt_SECRET",
    "refresh_token_id": "rt-1", "issued_at": "2026-03-04T05:06:07Z", "access_expires_at": "2026-03-04T05:06:07Z",
    "refresh_expires_at": "2026-03-04T05:06:07Z", "status": "active", "reauth_required": False,
}


def session(**changes: Any) -> str:
    return json.dumps({**SESSION, **changes})


def assert_refused_untouched(stores: Stores, done: Any, path: Path, original: bytes, pointer: str) -> None:
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, done.stderr
    assert f"refusing to migrate {path}: the object at {pointer} names the same member twice" in error[0], error
    assert " at line " in error[0] and ", column " in error[0]
    assert path.read_bytes() == original and not stores.work.exists()
    assert sorted(os.listdir(path.parent)) == sorted(p.name for p in stores.paths.values() if p.exists())
    for secret in ("sess-1", "secret-mail", "SECRET", "u-dup"):
        assert secret not in done.stderr + done.stdout


def test_the_issue_s_auth_store_is_refused_and_nothing_is_written(stores: Stores) -> None:
    original = (
        f'{{"sessions": {{"sess-1": {session()}, "sess-1": {session(device_id="d2")}}},'
        ' "users_by_id": {"u-dup": {}}, "users_by_id": {}}'
    ).encode()
    path = stores.write("auth", original)
    done = stores.call("store-migrate", "run", check=1)
    assert_refused_untouched(stores, done, path, original, "$.sessions")
    done = stores.call(RUN, env={"DRY_RUN": "1"}, check=1)
    assert "the object at $.sessions names the same member twice" in done.stderr


def test_a_field_named_twice_in_a_readable_record_is_refused_on_the_typed_path(stores: Stores) -> None:
    # Every record readable, so the one-pass decode into structs takes it (and keeps the last field).
    original = f'{{"sessions": {{"a": {session()}, "b": {session()[:-1]}, "status": "revoked"}}}}}}'.encode()
    path = stores.write("auth", original)
    done = stores.call("store-migrate", "run", check=1)
    assert_refused_untouched(stores, done, path, original, "$.sessions[#1]")
    column = original.index(b'"status": "revoked"') + 1
    assert f"line 1, column {column} (byte {column - 1})" in done.stderr


def test_a_key_repeated_with_escapes_or_hidden_by_an_escaped_colon_is_still_found(stores: Stores) -> None:
    # `\u0073ess` is `sess`; and a `\u003a` escape elsewhere adds the one colon the duplicate drops.
    second = session(token_name="x:y").replace("x:y", "x\\u003ay")
    original = ('{"sessions": {"sess": ' + session() + ', "\\u0073ess": ' + second + "}}").encode()
    assert original.count(b"\\u003a") == 1 and duplicates.written(original) == original.count(b":") + 1
    path = stores.write("auth", original)
    done = stores.call("store-migrate", "run", check=1)
    assert_refused_untouched(stores, done, path, original, "$.sessions")


def test_big_stores_in_worker_processes_are_refused_too(stores: Stores) -> None:
    threads = {f"thread-{i}": {"thread_id": f"t{i}", "user_id": "u", "org_id": "o", "autopilot_id": None,
                               "title": "x" * 200, "created_at": "2026-03-04T05:06:07Z",
                               "updated_at": "2026-03-04T05:06:07Z", "message_count": 1,
                               "last_message_at": "2026-03-04T05:06:07Z"} for i in range(40_000)}
    text = json.dumps({"threads": threads, "messages_by_thread": {}}).encode()
    last = text.rindex(b'"title": ')
    original = text[:last] + b'"title": "again", ' + text[last:]  # the last thread names its title twice
    path = stores.write("codex_threads", original)
    stores.write("auth", b"{}")  # two stores, enough bytes: prepared in worker processes
    stores.write("domain", json.dumps({"keep": ["x" * 100] * 100_000}))
    assert sum(p.stat().st_size for p in stores.paths.values()) > workers.PARALLEL_BYTES
    done = stores.call("store-migrate", "run", check=1)
    position = sorted(threads).index("thread-39999")
    assert_refused_untouched(stores, done, path, original, f"$.threads[#{position}]")


def test_check_reports_a_record_s_duplicate_field_as_unreadable_and_a_map_s_duplicate_key(
    stores: Stores, tmp_path: Path
) -> None:
    record = tmp_path / "record.json"
    record.write_text(f'{{"sessions": {{"k": {session()[:-1]}, "status": "active"}}}}}}')
    mapped = tmp_path / "map.json"
    mapped.write_text(f'{{"sessions": {{"sess-1": {session()}, "sess-1": {session()}}}}}')
    done = stores.call("store-migrate", "check", "--kind", "auth", "--json", str(record), str(mapped), check=1)
    first, second = json.loads(done.stdout)
    assert first["unreadable"] == 1 and first["problems"][0]["pointer"] == "$.sessions[#0]"
    assert first["problems"][0]["message"].startswith("duplicate field, named again at line 1, column ")
    assert second["unreadable"] == 0 and not second["readable"]
    assert second["problems"] == [{"pointer": "$.sessions", "message": second["problems"][0]["message"]}]
    assert second["problems"][0]["message"].startswith("duplicate key, named again at line 1, column ")
    assert "keep only the last" in second["problems"][0]["message"]
    assert "sess-1" not in done.stdout + done.stderr and "SECRET" not in done.stdout + done.stderr


def test_verify_strict_reports_a_duplicate_written_into_a_migrated_store(stores: Stores) -> None:
    stores.write("auth", f'{{"sessions": {{"sess-1": {session()}}}}}')
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    path = stores.paths["auth"]
    text = path.read_text()
    path.write_text(text.replace('"status": "active"', '"status": "active",\n      "status": "active"'))
    done = stores.call(VERIFY, manifest, env={"VERIFY_STRICT": "1"}, check=1)
    assert "$.sessions[#0]: duplicate field, named again at line " in done.stdout + done.stderr
    assert load_json(Path(manifest))["stores"][0]["store"] == "auth"


def test_counts_that_disagree_without_a_duplicate_still_refuse_and_say_it_is_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store_migrate.commands import prepare
    from store_migrate.errors import StoreRefused

    path = tmp_path / "auth.json"
    path.write_text(f'{{"sessions": {{"a": {session()}}}}}')
    counted = duplicates.written
    monkeypatch.setattr(duplicates, "written", lambda data: counted(data) + 1)  # a broken invariant
    with pytest.raises(StoreRefused) as refused:
        prepare.prepare("auth", str(path), str(path))
    assert "yet no object names a member twice: a bug in store-migrate" in refused.value.reason
    assert sorted(os.listdir(tmp_path)) == ["auth.json"], "the temporary file is removed"
    report = validate.Report("auth")
    duplicates.add_to(report, AUTH, path.read_bytes(), jsonio.decode(path.read_bytes()))
    assert not report.readable and "a bug in store-migrate" in report.problems[0].message


def test_a_file_changed_before_the_duplicate_is_located_is_refused_without_a_position(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text('{"sessions": {"s": {}, "s": {}}}')
    reason, position = duplicates.refusal(AUTH, str(path), "0" * 64, 5, 6)
    assert "names the same member twice (the file has changed since: run again to locate it)" in reason
    assert position is None
