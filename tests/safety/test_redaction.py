"""No store content in any output (issue 10, point 5).

A secret marker is planted in every kind of key and value a store can hold (the keys of every
map of every kind, the top level included; string, enum, boolean and timestamp fields; unknown
fields; free-form values; counters), next to numbers out of range, a lone surrogate escape and a
byte that is not UTF-8. Then every problem and refusal is triggered, through the CLI with JSON
logs (info is the lowest level the CLI offers) and in-process with logs at debug level, and the
marker, the digits of those numbers, the escape and the byte value must appear in no output:
stdout, stderr, reports, manifests, error messages.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from conftest import RUN, VERIFY, Stores, log_events
from hypothesis import given, settings
from hypothesis import strategies as st
from test_validate import resolve, schema, valid

from store_migrate.cli import report
from store_migrate.commands import check as cmd_check
from store_migrate.commands import rollback as cmd_rollback
from store_migrate.commands import run as cmd_run
from store_migrate.commands import verify as cmd_verify
from store_migrate.core import config, redact
from store_migrate.core.stores import KIND_ORDER, store_kind
from store_migrate.errors import StoreMigrateError
from store_migrate.readable import structs, validate

M = "SECRET-MARKER-7f3a"
DIGITS = "9317931793179317"
"""The digits of every out-of-range number planted (16 digits: a hash cannot hold them by chance)."""
FORBIDDEN = (M, DIGITS, "udbee", "0xfe", "\\xfe")
"""The marker, those digits, the lone surrogate escape `\\udbee` and the bad byte 0xfe."""
HUGE = int(DIGITS + "00000000")
"""Above u64, and above every u16/u32 ceiling."""


def leaks(*texts: str) -> list[str]:
    return [f"{word!r} in: {text}" for text in texts for word in FORBIDDEN if word in text]


def assert_no_leak(*texts: str) -> None:
    found = leaks(*texts)
    assert not found, "\n".join(found)


def free_form() -> Any:
    return {M: [M, {M: {M: M}}, HUGE, float(DIGITS)], f"{M}-2": None}


def marked(kind: str, node: dict[str, Any], depth: int = 0) -> Any:
    """A value for a schema node with the marker wherever a string goes, or one that is wrong
    (a marker in an enum, a timestamp or a boolean, an integer out of range); every map keyed
    by markers, with a member of the wrong type; every record with an unknown field."""
    node = resolve(kind, node)
    if "enum" in node:
        return M
    types = node.get("type")
    name = next((t for t in types if t != "null"), None) if isinstance(types, list) else types
    if name is None:
        return free_form()
    if name in ("string", "boolean"):
        return M
    if name == "integer":
        return HUGE
    if name == "array":
        return [marked(kind, node["items"], depth + 1)]
    if "properties" in node:
        record = {field: marked(kind, sub, depth + 1) for field, sub in node["properties"].items()}
        record[M] = free_form()
        return record
    member = node.get("additionalProperties", {})
    return {f"{M}-{depth}-a": marked(kind, member, depth + 1), f"{M}-{depth}-b": valid(kind, member),
            f"{M}-{depth}-c": {M: M}}


BAD_COUNTERS = [{"api_key": M}, M, float(DIGITS), HUGE, -HUGE, [M]]
"""Counters that refuse the store (an object, a string, a float, integers out of range, an array)."""


def marked_store(kind: str, counters: list[Any] | None = None) -> dict[str, Any]:
    """Every container of the kind full of marked members, an unknown top-level key, and counters
    written in every way that counts by value (or the `counters` given)."""
    store = {key: marked(kind, sub) for key, sub in schema(kind)["properties"].items()}
    store[M] = free_form()
    for counter, value in zip(store_kind(kind).counters, counters or ["+41", 7.0, 1e3, 12, None, "0041"],
                              strict=False):
        store[counter.name] = value
    return store


def readable_but_declined(kind: str) -> dict[str, Any]:
    """A store the service reads, keyed by markers, whose first record has an unknown field named
    by a marker: the one-pass decode declines it, quoting that name in msgspec's message."""
    store: dict[str, Any] = {}
    for key, sub in schema(kind)["properties"].items():
        member = sub.get("additionalProperties", sub.get("items"))
        if member is None or "$ref" not in member:
            continue
        record = valid(kind, member)
        record[M] = M
        store[key] = {M: record} if sub["type"] == "object" else [record]
    return store


def enum_declined() -> dict[str, Any]:
    """An auth store whose only problem is a marker in an enum field: `Invalid enum value '...'`."""
    session = valid("auth", {"$ref": "#/$defs/SessionRecord"})
    session["status"] = M
    return {"sessions": {M: session}, "access_index": {f"oa_at_{M}": "s1"}}


def outputs(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def written(stores: Stores, *reports: Path) -> str:
    """Everything the tool wrote that is not a store or a copy of one: manifests and reports."""
    texts = [p.read_text() for p in stores.manifests()]
    texts += [p.read_text() for p in reports if p.exists()]
    return "\n".join(texts)


# ------------------------------------------------------------------------- through the CLI


def test_run_dry_run_verify_rollback_and_reports_show_no_store_content(stores: Stores) -> None:
    for kind in KIND_ORDER:
        stores.write(kind, marked_store(kind))
    reports = [stores.root / f"report-{n}.md" for n in range(5)]
    calls = [
        stores.call("store-migrate", "run", "--dry-run", check=0),
        stores.call(RUN, "--strict", check=1),
        stores.call(RUN, check=0),
    ]
    dry = calls[0].stdout
    assert "counter next_user_integration_id: (a string) -> 41" in dry, dry  # the counter was read
    assert "    $.challenges[#" in dry  # problems are printed, by position
    assert "$.challenges[#" in calls[2].stderr  # the first 20 problems of each store are logged
    manifest = str(stores.newest_manifest())
    calls += [
        stores.call(VERIFY, manifest, "--strict", "--report", str(reports[0]), check=1),
        stores.call("store-migrate", "verify", manifest, "--strict", "--json", check=1),
        stores.call("store-migrate", "verify", manifest, "--additive", "--report", str(reports[1]), check=1),
    ]
    assert "[#" in reports[0].read_text()
    assert "- additive (nothing lost or changed): yes, every store holds all its backup held" in reports[1].read_text()
    # the stores change after the run: verify fails on each, rollback refuses, then is forced
    stores.write("auth", f'{{"{M}": "\\udbee", "x": {DIGITS}e999, "sessions": {{"{M}": '.encode() + b'"\xfe"}}')
    stores.write("codex_threads", {"threads": {M: M}, M: M})
    stores.write("domain", {"shouts": {M: M}, "next_shout_id": {M: M}})
    calls += [
        stores.call(VERIFY, manifest, "--strict", "--additive", "--report", str(reports[2]), check=1),
        proof := stores.call("store-migrate", "verify", manifest, "--additive", "--json", check=1),
        stores.call("store-migrate", "rollback", manifest, "--report", str(reports[3]), check=1),
        stores.call("store-migrate", "rollback", manifest, "--force", "--report", str(reports[4]), check=0),
    ]
    assert "does not parse: invalid UTF-8 at line 1" in reports[2].read_text()
    additive = {s["store"]: s["additive"] for s in json.loads(proof.stdout)["stores"]}
    assert additive["auth"]["first"][0]["message"].startswith("the live store does not parse (invalid UTF-8")
    assert additive["codex_threads"]["differences"] > 1 and additive["domain"]["differences"] > 1
    for bad in BAD_COUNTERS:  # each refuses the store, naming the counter and its type only
        stores.write("domain", marked_store("domain", [bad] * 6))
        calls += [stores.call("store-migrate", "run", "--dry-run", check=1), stores.call(RUN, check=1)]
        assert "counter 'next_user_integration_id' is" in calls[-1].stderr
    assert_no_leak(*map(outputs, calls), written(stores, *reports))


def test_check_text_and_json_show_no_store_content(stores: Stores, tmp_path: Path) -> None:
    calls = []
    for kind, forms in zip(KIND_ORDER, ([[], ["--json"]], [["--json"]], [[]]), strict=True):
        files = [tmp_path / f"{kind}-marked.json", tmp_path / f"{kind}-declined.json"]
        files[0].write_text(json.dumps(marked_store(kind)))
        files[1].write_text(json.dumps(readable_but_declined(kind)))
        for form in forms:  # text and JSON print the same problems
            calls.append(stores.call("store-migrate", "check", "--kind", kind, "--max-problems", "100000", *form,
                                     *map(str, files), check=1))
    problems = json.loads(calls[1].stdout)[0]["problems"]
    pointers = {p["pointer"].split("[")[0] for p in problems}
    assert {f"$.{key}" for key in store_kind("auth").containers} <= pointers  # every map was reported
    assert_no_leak(*map(outputs, calls))


def test_the_one_pass_decode_declining_shows_no_store_content(stores: Stores) -> None:
    calls = []
    for variant in ("unknown field", "enum"):
        for kind in KIND_ORDER:
            stores.write(kind, readable_but_declined(kind) if variant == "unknown field" or kind != "auth"
                         else enum_declined())
        calls.append(stores.call("store-migrate", "run", "--dry-run", check=0))
        reasons = {e["store"]: e["reason"] for e in log_events(calls[-1].stderr) if e["event"] == "store.general_path"}
        assert set(reasons) == set(KIND_ORDER), calls[-1].stderr
        expected = "Invalid enum value (at $.sessions[...].status)" if variant == "enum" else "Object contains unknown field"
        assert reasons["auth"].startswith(expected), reasons
        assert reasons["domain"].startswith("Object contains unknown field (at $."), reasons
    assert_no_leak(*map(outputs, calls))


REFUSED = {
    "invalid UTF-8": f'{{"{M}": "'.encode() + b'\xfe"}',
    "lone surrogate": f'{{"{M}": "\\udbee"}}',
    "number out of range": f'{{"{M}": {DIGITS}e999}}',
    "truncated": f'{{"{M}": "{M}',
    "malformed": f'{{"{M}": tru}}',
    "trailing characters": f'{{"{M}": 1}} "{M}"',
    "byte-order mark": b"\xef\xbb\xbf" + f'{{"{M}": 1}}'.encode(),
    "root not an object": f'["{M}"]',
    "wrong container": f'{{"sessions": ["{M}"], "access_index": {{"{M}": {{"{M}": "{M}"}}}}}}',
    "nesting in an unknown key": f'{{"{M}": {"[" * 130}{"]" * 130}}}',
    "nesting in a map member": f'{{"sessions": {{"{M}": {{"{M}": {"[" * 130}{"]" * 130}}}}}}}',
}


REFUSED_TOGETHER = [  # one run prepares all three stores and logs each refusal (`store.refused`)
    ("wrong container", "invalid UTF-8", "lone surrogate"),
    ("nesting in a map member", "number out of range", "truncated"),
    ("malformed", "trailing characters", "byte-order mark"),
    ("root not an object", "nesting in an unknown key", None),
]


@pytest.mark.parametrize("names", REFUSED_TOGETHER, ids=lambda names: ", ".join(filter(None, names)))
def test_refused_stores_show_no_store_content(stores: Stores, names: tuple[str | None, ...]) -> None:
    for kind, name in zip(KIND_ORDER, names, strict=True):  # the map cases name auth's maps
        if name is not None:
            stores.write(kind, REFUSED[name])
    done = stores.call(RUN, "--strict", check=1)
    refused = [e["store"] for e in log_events(done.stderr) if e["event"] == "store.refused"]
    assert refused == [kind for kind, name in zip(KIND_ORDER, names, strict=True) if name is not None], done.stderr
    assert_no_leak(outputs(done))


def test_check_of_unparseable_and_too_deep_files_shows_no_store_content(stores: Stores, tmp_path: Path) -> None:
    files = []
    for n, content in enumerate(REFUSED.values()):
        files.append(tmp_path / f"refused-{n}.json")
        files[-1].write_bytes(content if isinstance(content, bytes) else content.encode())
    calls = [stores.call("store-migrate", "check", "--kind", "auth", *form, *map(str, files), check=1)
             for form in ([], ["--json"])]
    checked = json.loads(calls[1].stdout)
    deep = [c["problems"][0]["pointer"] for c in checked if "nest" in c["problems"][0]["message"]]
    assert deep == ["$[#0][0]", "$.sessions[#0]"], checked
    assert_no_leak(*map(outputs, calls))


# ------------------------------------------------------------------ in-process, at debug level


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    """Every log event of in-process library calls, at debug level, as JSON lines."""
    captured = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=captured),
    )
    yield captured
    structlog.reset_defaults()


def test_library_calls_at_debug_level_show_no_store_content(
    stores: Stores, debug_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in stores.environ.items():
        monkeypatch.setenv(key, value)
    for kind in KIND_ORDER:
        stores.write(kind, marked_store(kind))
    settings = config.resolve()
    texts: list[str] = []

    def refused(call: Any) -> None:
        with pytest.raises(StoreMigrateError) as error:
            call()
        texts.append(f"{error.value.message} {error.value.hint}")

    dry = cmd_run.dry_run(settings)
    texts += [f"{p.pointer} {p.message}" for d in dry for p in d.report.problems]
    refused(lambda: cmd_run.run(settings, strict=True))
    result = cmd_run.run(settings)
    manifest = result.manifest_path
    checked = cmd_verify.verify(manifest, strict=True)
    texts.append(report.markdown(report.verify_evidence(checked, manifest)))
    texts.append(json.dumps(report.verify_evidence(checked, manifest), ensure_ascii=False))
    texts += [f"{p.pointer} {p.message}" for kind in KIND_ORDER
              for c in cmd_check.check(kind, [str(stores.paths[kind])], limit=100000) for p in c.report.problems]
    stores.write("auth", REFUSED["lone surrogate"])
    stores.write("domain", REFUSED["invalid UTF-8"])
    checked = cmd_verify.verify(manifest, strict=True)
    texts.append(report.markdown(report.verify_evidence(checked, manifest)))
    refused(lambda: cmd_rollback.rollback(manifest))
    texts.append(report.markdown(report.rollback_evidence(cmd_rollback.rollback(manifest, force=True), manifest)))
    stores.write("auth", REFUSED["wrong container"])
    refused(lambda: cmd_run.dry_run(settings))
    assert '"level": "debug"' in debug_logs.getvalue() and '"store.general_path"' in debug_logs.getvalue()
    assert_no_leak(debug_logs.getvalue(), *texts, written(stores))


# --------------------------------------------------------------------- pointers, jq, messages


def test_the_readme_jq_commands_find_the_member_a_pointer_names(tmp_path: Path) -> None:
    """Positions follow code-point order, which jq's `keys` uses too (UTF-16 order would put
    U+FFFD after the emoji)."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    keys = ["oa_at_b", "oa_at_a", "\U0001f600", "\ufffd", "Z", "oa_at_\u00e9", ""]
    for bad in keys:
        store = {"access_index": {key: "session" for key in keys}}
        store["access_index"][bad] = 7
        problems = validate.validate("auth", store, None).problems
        assert [p.message for p in problems] == ["expected a string, found an integer"]
        position = re.fullmatch(r"\$\.access_index\[#(\d+)\]", problems[0].pointer)
        assert position is not None, problems[0].pointer
        path = tmp_path / "store.json"
        path.write_text(json.dumps(store))
        key = subprocess.run(["jq", f".access_index | keys[{position[1]}]", str(path)],
                             capture_output=True, text=True, check=True).stdout
        member = subprocess.run(["jq", f".access_index[(.access_index|keys)[{position[1]}]]", str(path)],
                                capture_output=True, text=True, check=True).stdout
        assert json.loads(key) == bad and json.loads(member) == 7


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=30, unique=True), st.data())
def test_a_pointer_names_a_member_by_its_place_in_sorted_keys(keys: list[str], data: st.DataObject) -> None:
    bad = data.draw(st.sampled_from(keys))
    store = {"users_by_email": dict.fromkeys(keys, "u1"), "sessions": {}}
    store["users_by_email"][bad] = {M: M}
    session = valid("auth", {"$ref": "#/$defs/SessionRecord"})
    store["sessions"] = {key: {**session, "issued_at": M} if key == bad else session for key in keys}
    problems = validate.validate("auth", store, None).problems
    where = sorted(keys).index(bad)
    assert [p.pointer for p in problems] == [f"$.sessions[#{where}].issued_at", f"$.users_by_email[#{where}]"]
    assert_no_leak(*(p.message for p in problems))


def test_positions_sort_a_map_once_per_report() -> None:
    positions = redact.Positions()
    container = {"b": 1, "a": 2, "c": 3}
    assert [positions.member(container, k) for k in container] == ["[#1]", "[#0]", "[#2]"]
    container["0"] = 4  # later changes are not seen: the keys were sorted once, when first asked
    assert positions.member(container, "a") == "[#0]"
    assert redact.Positions().member(container, "a") == "[#1]"


SESSION = structs.tolerant_members(store_kind("auth"))["sessions"]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=8), st.sampled_from(["status", "issued_at", "reauth_required", "unknown"]))
def test_decoder_messages_keep_the_reason_and_the_path_only(text: str, field: str) -> None:
    secret = M + text
    record = {**valid("auth", {"$ref": "#/$defs/SessionRecord"}), field: secret}
    exact = structs.exact(store_kind("auth")).root
    messages = []
    for decode in (lambda: msgspec.convert(record, SESSION),
                   lambda: msgspec.json.decode(json.dumps({"sessions": {secret: record}}), type=exact)):
        try:
            decode()
        except msgspec.ValidationError as exc:
            messages.append(redact.decoder_message(str(exc)))
    if field != "unknown":
        assert messages[0].endswith(f"(at $.{field})"), messages
    else:
        assert messages == ["Object contains unknown field (at $.sessions[...])"]
    assert_no_leak(*messages)


@pytest.mark.parametrize(("message", "reduced"), [
    ("Invalid enum value 'x - at `$.y`' - at `$.sessions[...].status`", "Invalid enum value (at $.sessions[...].status)"),
    ("Object contains unknown field `oa_at_1` - at `$.sessions[...]`", "Object contains unknown field (at $.sessions[...])"),
    ("Expected `int`, got `str` - at `$.shouts[3].id`", "Expected `int`, got `str` (at $.shouts[3].id)"),
    ("Expected `int` <= 65535 - at `$[...]`", "Expected `int` <= 65535 (at $[...])"),
    ("Object missing required field `status` - at `$.sessions[...]`",
     "Object missing required field `status` (at $.sessions[...])"),
    ("Expected `str` matching regex '\\\\A[0-9]{4}' - at `$.x`", "Expected `str` matching the schema's pattern (at $.x)"),
    ("JSON is malformed: expected ',' or '}' (byte 12)", "JSON is malformed: expected ',' or '}' (byte 12)"),
    ("Invalid value 17", "Invalid value"),
    ("Number out of range - at `$.a['key']`", "Number out of range"),
    ("'quoted'", "rejected"),
])
def test_decoder_message_examples(message: str, reduced: str) -> None:
    assert redact.decoder_message(message) == reduced
