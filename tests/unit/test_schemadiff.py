"""schema-diff: is a schema change safe while the old and the new release both read the stores?

Proven two ways: a table of changes to the real schema files, one or more per construct that
schemas/ uses, each with the verdicts expected; and a hypothesis property: whenever schema-diff
says safe, every store either release could write (generated from its schema, holding no field
beyond those it names) is readable under both schemas, as the project's own validator reads them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT, Stores, log_events
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from store_migrate.commands import schema_diff as schemadiff
from store_migrate.core.stores import kind_from_schema
from store_migrate.readable import validate

SCHEMAS = PROJECT / "schemas"
U64 = 2**64 - 1
OLD, NEW, BOTH, SAFE = ("old",), ("new",), ("old", "new"), ()


def real(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def record(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return schema["$defs"][name]


def _rename_def(schema: dict[str, Any], old: str, new: str) -> None:
    schema["$defs"][new] = schema["$defs"].pop(old)
    text = json.dumps(schema).replace(f'"#/$defs/{old}"', f'"#/$defs/{new}"')
    schema.clear()
    schema.update(json.loads(text))


Edit = Callable[[dict[str, Any]], None]
SESSION = "#/$defs/SessionRecord"
THREAD = "#/$defs/ThreadProjectionRecord"
MESSAGE = "#/$defs/ThreadMessageRecord"

TABLE: list[tuple[str, str, Edit, list[tuple[str, tuple[str, ...]]]]] = [
    # documentation
    ("auth", "description", lambda s: s.update(description="reworded"), [("#/description", SAFE)]),
    ("auth", "title of a record", lambda s: record(s, "SessionRecord").update(title="a session"),
     [(f"{SESSION}/title", SAFE)]),
    # properties and required
    ("auth", "new optional field", lambda s: record(s, "SessionRecord")["properties"].update(device_name={"type": "string"}),
     [(f"{SESSION}/properties/device_name", SAFE)]),
    ("auth", "new required field", lambda s: (record(s, "SessionRecord")["properties"].update(tier={"type": "string"}),
                                              record(s, "SessionRecord")["required"].append("tier")),
     [(f"{SESSION}/properties/tier", NEW)]),
    ("codex_threads", "optional field made required", lambda s: record(s, "ThreadProjectionRecord")["required"].append(
        "autopilot_id"), [(f"{THREAD}/properties/autopilot_id", NEW)]),
    ("codex_threads", "required field made optional", lambda s: record(s, "ThreadMessageRecord")["required"].remove(
        "role"), [(f"{MESSAGE}/properties/role", OLD)]),
    ("codex_threads", "optional field removed", lambda s: record(s, "ThreadProjectionRecord")["properties"].pop("title"),
     [(f"{THREAD}/properties/title", SAFE)]),
    ("codex_threads", "required field removed", lambda s: (record(s, "ThreadMessageRecord")["properties"].pop("role"),
                                                         record(s, "ThreadMessageRecord")["required"].remove("role")),
     [(f"{MESSAGE}/properties/role", OLD)]),
    ("codex_threads", "required name without a property", lambda s: record(s, "ThreadMessageRecord")["required"].append(
        "ghost"), [(f"{MESSAGE}/required", NEW)]),
    # type, including ["x", "null"]
    ("codex_threads", "made nullable", lambda s: record(s, "ThreadMessageRecord")["properties"]["role"].update(
        type=["string", "null"]), [(f"{MESSAGE}/properties/role/type", OLD)]),
    ("codex_threads", "no longer nullable", lambda s: record(s, "ThreadProjectionRecord")["properties"]["title"].update(
        type="string"), [(f"{THREAD}/properties/title/type", NEW)]),
    ("codex_threads", "changed type", lambda s: record(s, "ThreadProjectionRecord")["properties"]["message_count"].update(
        type="string"), [(f"{THREAD}/properties/message_count/type", BOTH)]),
    ("domain", "any value given a type", lambda s: record(s, "UserIntegrationRecord")["properties"]["metadata"].update(
        type="object"), [("#/$defs/UserIntegrationRecord/properties/metadata/type", NEW)]),
    ("domain", "a type made any value", lambda s: record(s, "ShoutRecord")["properties"]["body"].pop("type"),
     [("#/$defs/ShoutRecord/properties/body/type", OLD)]),
    # enum
    ("auth", "new enum value", lambda s: record(s, "SessionRecord")["properties"]["status"]["enum"].append("locked"),
     [(f"{SESSION}/properties/status/enum", OLD)]),
    ("auth", "enum value removed", lambda s: record(s, "SessionRecord")["properties"]["status"]["enum"].remove("expired"),
     [(f"{SESSION}/properties/status/enum", NEW)]),
    ("auth", "null added to an enum", lambda s: record(s, "SessionRecord")["properties"]["status"]["enum"].append(None),
     [(f"{SESSION}/properties/status/enum", OLD)]),
    ("auth", "enum reordered", lambda s: record(s, "SessionRecord")["properties"]["status"]["enum"].reverse(), []),
    # minimum / maximum (also through $defs/u64)
    ("codex_threads", "wider integer range", lambda s: record(s, "ThreadProjectionRecord")["properties"][
        "message_count"].update(maximum=U64), [(f"{THREAD}/properties/message_count/maximum", OLD)]),
    ("codex_threads", "narrower integer range", lambda s: record(s, "ThreadProjectionRecord")["properties"][
        "message_count"].update(minimum=1, maximum=65535),
     [(f"{THREAD}/properties/message_count/minimum", NEW), (f"{THREAD}/properties/message_count/maximum", NEW)]),
    ("domain", "u64 ceiling lowered, judged once where it is defined", lambda s: record(s, "u64").update(
        maximum=2**63 - 1), [("#/$defs/u64/maximum", NEW)]),
    ("codex_threads", "bound removed", lambda s: record(s, "ThreadProjectionRecord")["properties"]["message_count"].pop(
        "minimum"), [(f"{THREAD}/properties/message_count/minimum", OLD)]),
    # format
    ("codex_threads", "format removed", lambda s: record(s, "ThreadMessageRecord")["properties"]["created_at"].pop(
        "format"), [(f"{MESSAGE}/properties/created_at/format", OLD)]),
    ("codex_threads", "format added", lambda s: record(s, "ThreadMessageRecord")["properties"]["text"].update(
        format="date-time"), [(f"{MESSAGE}/properties/text/format", NEW)]),
    ("codex_threads", "format changed", lambda s: record(s, "ThreadMessageRecord")["properties"]["created_at"].update(
        format="date"), [(f"{MESSAGE}/properties/created_at/format", BOTH)]),
    # pattern (the manifest schema uses it, also inside oneOf and then: compared as a whole there)
    ("manifest", "pattern changed", lambda s: record(s, "sha256").update(pattern="^[0-9a-fA-F]{64}$"),
     [("#/$defs/entry/properties/before_sha256/oneOf", BOTH), ("#/$defs/sha256/pattern", BOTH),
      ("#/$defs/entry/then", BOTH)]),
    ("manifest", "pattern removed", lambda s: record(s, "sha256").pop("pattern"),
     [("#/$defs/entry/properties/before_sha256/oneOf", BOTH), ("#/$defs/sha256/pattern", OLD),
      ("#/$defs/entry/then", BOTH)]),
    ("manifest", "pattern added", lambda s: record(s, "entry")["properties"]["path"].update(pattern="^/"),
     [("#/$defs/entry/properties/path/pattern", NEW)]),
    ("manifest", "new enum value at the root", lambda s: s["properties"]["status"]["enum"].append("aborted"),
     [("#/properties/status/enum", OLD)]),
    ("manifest", "a keyword compared as a whole", lambda s: record(s, "entry")["properties"]["before_sha256"]["oneOf"].pop(),
     [("#/$defs/entry/properties/before_sha256/oneOf", BOTH)]),
    ("manifest", "a longer minimum length", lambda s: record(s, "entry")["properties"]["path"].update(minLength=2),
     [("#/$defs/entry/properties/path/minLength", NEW)]),
    # additionalProperties: map members, and records made strict
    ("auth", "map members made nullable", lambda s: s["properties"]["access_index"]["additionalProperties"].update(
        type=["string", "null"]), [("#/properties/access_index/additionalProperties/type", OLD)]),
    ("auth", "stricter additionalProperties", lambda s: record(s, "SessionRecord").update(additionalProperties=False),
     [(f"{SESSION}/additionalProperties", NEW)]),
    ("auth", "map members no longer checked", lambda s: s["properties"]["users_by_email"].pop("additionalProperties"),
     [("#/properties/users_by_email/additionalProperties", OLD)]),
    # items
    ("codex_threads", "items no longer checked", lambda s: s["properties"]["messages_by_thread"]["additionalProperties"]
     .pop("items"), [("#/properties/messages_by_thread/additionalProperties/items", OLD)]),
    ("domain", "a field of list items changed type", lambda s: record(s, "ShoutRecord")["properties"]["zone"].update(
        type="integer"), [("#/$defs/ShoutRecord/properties/zone/type", BOTH)]),
    # $defs / $ref
    ("codex_threads", "a definition renamed", lambda s: _rename_def(s, "ThreadMessageRecord", "MessageRecord"), []),
    ("codex_threads", "a definition no field uses", lambda s: s["$defs"].update(Unused={"type": "string"}),
     [("#/$defs/Unused", SAFE)]),
    ("codex_threads", "a reference replaced by what it names", lambda s: s["properties"]["threads"].update(
        additionalProperties=copy.deepcopy(record(s, "ThreadProjectionRecord"))), []),
    # top-level keys, x-counter-for, x-store-migrate
    ("auth", "new top-level key", lambda s: s["properties"].update(audit_log={"type": "array", "items": {"type": "string"}}),
     [("#/properties/audit_log", SAFE)]),
    ("auth", "top-level key removed", lambda s: s["properties"].pop("users_by_workos_id"),
     [("#/properties/users_by_workos_id", OLD)]),
    ("domain", "new counter", lambda s: s["properties"].update(next_autopilot_id={"$ref": "#/$defs/u64",
                                                                                  "x-counter-for": "autopilots"}),
     [("#/properties/next_autopilot_id", SAFE)]),
    ("domain", "counter guards other rows", lambda s: s["properties"]["next_shout_id"].update(
        **{"x-counter-for": "whispers"}), [("#/properties/next_shout_id/x-counter-for", BOTH)]),
    ("domain", "manifest counts", lambda s: s["x-store-migrate"]["counts"].pop(), [("#/x-store-migrate/counts", SAFE)]),
    ("domain", "default file", lambda s: s["x-store-migrate"].update(default_file="domain.json"),
     [("#/x-store-migrate/default_file", BOTH)]),
    ("domain", "$schema", lambda s: s.update({"$schema": "https://json-schema.org/draft-07/schema"}),
     [("#/$schema", BOTH)]),
]


@pytest.mark.parametrize(("file", "what", "edit", "expected"), TABLE, ids=[row[1] for row in TABLE])
def test_every_construct_the_schemas_use(file: str, what: str, edit: Edit, expected: list[tuple[str, tuple[str, ...]]]) -> None:
    old = real(file)
    new = copy.deepcopy(old)
    edit(new)
    changes = schemadiff.diff_schemas(old, new, f"{file}.schema.json")
    assert [(c.pointer, c.breaks) for c in changes] == expected, [c.to_json() for c in changes]
    assert all(c.sentence and c.file == f"{file}.schema.json" for c in changes)


def test_a_new_field_where_the_old_schema_restricts_fields() -> None:
    old = real("auth")
    record(old, "SessionRecord")["additionalProperties"] = False
    new = copy.deepcopy(old)
    record(new, "SessionRecord")["properties"]["device_name"] = {"type": "string"}
    assert [(c.pointer, c.breaks) for c in schemadiff.diff_schemas(old, new)] == [
        (f"{SESSION}/properties/device_name", OLD)]
    assert [(c.pointer, c.breaks) for c in schemadiff.diff_schemas(new, old)] == [
        (f"{SESSION}/properties/device_name", NEW)]


def test_the_schemas_against_themselves_have_no_change() -> None:
    for name in ("auth", "codex_threads", "domain", "manifest"):
        assert schemadiff.diff_schemas(real(name), real(name)) == []


# ------------------------------------------------------------------------------ the CLI


def _write(directory: Path, schemas: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (directory / f"{name}.schema.json").write_text(json.dumps(schema, indent=2))
    return directory


def test_two_directories_two_files_and_json(stores: Stores, tmp_path: Path) -> None:
    names = ("auth", "codex_threads", "domain", "manifest")
    old = _write(tmp_path / "old", {n: real(n) for n in names})
    changed = {n: real(n) for n in names}
    record(changed["auth"], "SessionRecord")["properties"]["device_name"] = {"type": "string"}
    changed["domain"]["properties"]["audit"] = {"type": "object", "additionalProperties": {"type": "string"}}
    safe = _write(tmp_path / "safe", changed)
    done = stores.call("store-migrate", "schema-diff", str(old), str(safe), check=0)
    assert done.stdout.splitlines() == [
        "safe: auth.schema.json#/$defs/SessionRecord/properties/device_name: a new optional field: the old release "
        "ignores it, records without it stay readable",
        "safe: domain.schema.json#/properties/audit: a new top-level key the backfill adds: the old release ignores "
        "it, the new one reads it as empty until then",
        "schema-diff: safe: 2 change(s), each safe while both releases run",
    ]
    event = next(e for e in log_events(done.stderr) if e["event"] == "schemas.compared")
    assert event["safe"] is True and event["changes"] == 2

    record(changed["auth"], "SessionRecord")["properties"]["status"]["enum"].append("locked")
    changed["codex_threads"]["$defs"]["ThreadMessageRecord"]["required"].append("lang")
    unsafe = _write(tmp_path / "unsafe", changed)
    done = stores.call("store-migrate", "schema-diff", str(old), str(unsafe), check=1)
    assert ("unsafe for the old release: auth.schema.json#/$defs/SessionRecord/properties/status/enum: new enum "
            'value(s) "locked": the old release fails on records the new one writes with them') in done.stdout
    assert ("unsafe for the new release: codex_threads.schema.json#/$defs/ThreadMessageRecord/required: 'lang' made "
            "required: existing records without it fail the new release") in done.stdout
    assert "error: 2 of 4 schema change(s) are not safe while both releases run" in done.stderr
    document = json.loads(stores.call("store-migrate", "schema-diff", "--json", str(old), str(unsafe), check=1).stdout)
    assert document["kind"] == "schema-diff" and document["safe"] is False
    assert document["files"] == [f"{n}.schema.json" for n in sorted(names)]
    assert {"file": "auth.schema.json", "pointer": "#/$defs/SessionRecord/properties/status/enum",
            "verdict": "unsafe for the old release", "safe": False, "unsafe_for": ["old"],
            "sentence": 'new enum value(s) "locked": the old release fails on records the new one writes with them'
            } in document["changes"]
    one = stores.call("store-migrate", "schema-diff", str(old / "auth.schema.json"), str(unsafe / "auth.schema.json"),
                      check=1)
    assert one.stdout.splitlines()[:2] == [
        'unsafe for the old release: auth.schema.json#/$defs/SessionRecord/properties/status/enum: new enum value(s) '
        '"locked": the old release fails on records the new one writes with them',
        "safe: auth.schema.json#/$defs/SessionRecord/properties/device_name: a new optional field: the old release "
        "ignores it, records without it stay readable"]


def test_against_a_git_revision(stores: Stores, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(repo / "schemas", {"auth": real("auth"), "domain": real("domain")})
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["init", "-q"], ["add", "schemas"], ["commit", "-qm", "schemas"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=env)
    stores.root = repo
    assert stores.call("store-migrate", "schema-diff", "--against", "HEAD", check=0).stdout == (
        "schema-diff: safe: 0 change(s), each safe while both releases run\n")
    changed = real("domain")
    record(changed, "ShoutRecord")["properties"]["visibility"]["type"] = ["string", "null"]
    _write(repo / "schemas", {"domain": changed})
    done = stores.call("store-migrate", "schema-diff", "--against", "HEAD", check=1)
    assert done.stdout.splitlines()[0] == (
        "unsafe for the old release: domain.schema.json#/$defs/ShoutRecord/properties/visibility/type: made nullable: "
        "the old release fails on null, which the new one may write")
    done = stores.call("store-migrate", "schema-diff", "--against", "no-such-revision", check=2)
    assert done.stderr.startswith("error: git rev-parse")


def test_usage_errors_exit_2_and_unreadable_schemas_exit_1(stores: Stores, tmp_path: Path) -> None:
    old = _write(tmp_path / "old", {"auth": real("auth")})
    assert stores.call("store-migrate", "schema-diff", check=2).stderr.startswith("error: give OLD and NEW")
    assert "not both" in stores.call("store-migrate", "schema-diff", str(old), str(old), "--against", "HEAD",
                                     check=2).stderr
    assert "does not exist" in stores.call("store-migrate", "schema-diff", str(old), "/nowhere", check=2).stderr
    with pytest.raises(schemadiff.SchemaDiffUsage, match="give two schema files or two directories"):
        schemadiff.diff_paths(str(old), str(old / "auth.schema.json"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "auth.schema.json").write_text("{")
    done = stores.call("store-migrate", "schema-diff", str(old), str(broken), check=1)
    assert done.stderr.startswith(f"error: {broken / 'auth.schema.json'} is not valid JSON")
    bad_ref = real("auth")
    bad_ref["properties"]["sessions"]["additionalProperties"]["$ref"] = "#/$defs/Nothing"
    with pytest.raises(schemadiff.SchemaDiffError, match="the reference #/\\$defs/Nothing does not resolve"):
        schemadiff.diff_schemas(real("auth"), bad_ref)


def test_help_explains_the_verdicts(stores: Stores) -> None:
    text = stores.call("store-migrate", "schema-diff", "--help", env={"COLUMNS": "200"}, check=0).stdout
    for words in ("safe: a new optional field", "unsafe for the old release", "unsafe for the new release",
                  "Exit 0 when every change is safe, 1 when any is not"):
        assert words in text


# ------------------------------------------------------------------------------ the property

TIMESTAMPS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=4)
ANY = _SCALARS | st.lists(_SCALARS, max_size=2) | st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2)
LEAVES: list[dict[str, Any]] = [
    {"type": "string"}, {"type": ["string", "null"]}, {"type": "string", "format": "date-time"},
    {"type": ["string", "null"], "format": "date-time"}, {"type": "boolean"}, {"type": ["boolean", "null"]},
    {"type": "integer", "minimum": 0, "maximum": 65535}, {"type": "integer", "minimum": 0, "maximum": 4294967295},
    {"type": "integer", "minimum": 10, "maximum": 20}, {"type": ["integer", "null"], "minimum": 0, "maximum": 9},
    {"$ref": "#/$defs/u64"}, {"enum": ["a", "b", "c"]}, {"enum": ["a", "b", None]}, {"enum": ["b", "c"]},
    {"description": "any JSON value, null included"},
]
FIELDS = [f"f{i}" for i in range(8)]


_FIELD_SETS = st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)
_LEAF = st.sampled_from(LEAVES)
_BITS = st.integers(0, 255)


@st.composite
def store_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A store schema built from the constructs schemas/ uses, every record used by a container."""
    defs: dict[str, Any] = {"u64": {"type": "integer", "minimum": 0, "maximum": U64}}
    shape = draw(_BITS)
    for i in range(1 + shape % 3):
        names = draw(_FIELD_SETS)
        required = draw(_BITS)
        defs[f"R{i}"] = {"type": "object", "required": [n for j, n in enumerate(names) if required >> j & 1],
                         "properties": {name: copy.deepcopy(draw(_LEAF)) for name in names}}
    members: list[Any] = [{"$ref": f"#/$defs/R{i}"} for i in range(1 + shape % 3)]
    if shape & 4:
        members.append(copy.deepcopy(draw(_LEAF)))
    properties: dict[str, Any] = {
        f"c{i}": {"type": "array", "items": member} if shape >> (3 + i) & 1 else
        {"type": "object", "additionalProperties": member}
        for i, member in enumerate(members)
    }
    if shape & 128:
        properties["next_c0_id"] = {"$ref": "#/$defs/u64", "x-counter-for": "c0"}
    return {"type": "object", "x-store-migrate": {"kind": "auth", "env": "A", "service_env": "B",
                                                   "default_file": "a.json", "counts": []},
            "properties": properties, "$defs": defs}


def _records(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for n, d in sorted(schema["$defs"].items()) if n.startswith("R")]


def _base(node: dict[str, Any]) -> str | None:
    types = node.get("type")
    return next((t for t in (types if isinstance(types, list) else [types]) if t != "null"), None)


def _nullable(node: dict[str, Any]) -> bool:
    return None in node.get("enum", ()) or (isinstance(node.get("type"), list) and "null" in node["type"])


def _leaf_move(move: str, node: dict[str, Any], draw: st.DrawFn) -> None:
    """Change one field's schema in place (the caller drew a field the move applies to)."""
    if move == "make nullable":
        if "enum" in node:
            node["enum"].append(None)
        else:
            node["type"] = [node["type"], "null"]
    elif move == "make non-nullable":
        if "enum" in node:
            node["enum"].remove(None)
        else:
            node["type"] = _base(node)
    elif move == "change type":
        other = draw(st.sampled_from([t for t in ("string", "integer", "boolean") if t != _base(node)]))
        node.clear()
        node["type"] = other
    elif move == "enum value":
        extra = draw(st.sampled_from(["a", "b", "c", "d"]))
        node["enum"] = [v for v in node["enum"] if v != extra] if extra in node["enum"] else [*node["enum"], extra]
        assume(node["enum"])
    elif move in ("widen bounds", "narrow bounds"):
        low, high = node["minimum"], node["maximum"]
        step = draw(st.integers(1, 5))
        if move == "widen bounds":
            node.update(minimum=max(0, low - step), maximum=min(U64, high + step))
        else:
            node.update(minimum=min(low + step, high), maximum=max(high - step, low + step, low))
    elif move == "add format":
        node["format"] = "date-time"
    elif move == "remove format":
        del node["format"]
    elif move == "make any":
        node.clear()
        node["description"] = "any JSON value"
    elif move == "give a type":
        node["type"] = draw(st.sampled_from(["string", "integer", "boolean", "object", "array"]))


LEAF_MOVES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "make nullable": lambda n: (_base(n) is not None or "enum" in n) and not _nullable(n),
    "make non-nullable": lambda n: _nullable(n) and ("enum" not in n or len(n["enum"]) > 1),
    "change type": lambda n: _base(n) is not None,
    "enum value": lambda n: "enum" in n,
    "widen bounds": lambda n: "minimum" in n and "maximum" in n,
    "narrow bounds": lambda n: "minimum" in n and "maximum" in n and n["maximum"] > n["minimum"],
    "add format": lambda n: _base(n) == "string" and "format" not in n,
    "remove format": lambda n: "format" in n,
    "make any": lambda n: bool(set(n) - {"description"}),
    "give a type": lambda n: not set(n) - {"description"},
}


_MUTATIONS = st.sampled_from([1, 1, 1, 2])
MOVES = sorted(["add optional", "add required", "remove field", "make required", "make optional", "replace field",
                "description", "new container", "u64", "new counter", "container members", "remove container",
                "make nullable", "make non-nullable", "change type", "enum value", "widen bounds", "narrow bounds",
                "add format", "remove format", "make any", "give a type"])


@st.composite
def mutated(draw: st.DrawFn, schema: dict[str, Any], first: str | None = None) -> dict[str, Any]:
    """The schema after one to three changes of the kinds a release makes, safe and unsafe, each
    drawn among the places it applies to; the first is `first` where it applies."""
    new = copy.deepcopy(schema)
    for step in range(draw(_MUTATIONS)):
        records = _records(new)
        fields = [(r, name) for r in records for name in r["properties"]]
        containers = [k for k, p in new["properties"].items() if "x-counter-for" not in p]
        moves: dict[str, list[Any]] = {
            "add optional": [(r, n) for r in records for n in FIELDS if n not in r["properties"]],
            "add required": [(r, n) for r in records for n in FIELDS if n not in r["properties"]],
            "remove field": [(r, n) for r, n in fields if len(r["properties"]) > 1],
            "make required": [(r, n) for r, n in fields if n not in r["required"]],
            "make optional": [(r, n) for r, n in fields if n in r["required"]],
            "replace field": fields,
            "description": [(r, None) for r in records],
            "new container": [None], "u64": [None], "new counter": [None], "container members": containers,
            "remove container": containers if len(containers) > 1 else [],
        }
        for name, applies in LEAF_MOVES.items():
            moves[name] = [(r, n) for r, n in fields if "$ref" not in r["properties"][n] and applies(r["properties"][n])]
        applicable = sorted(m for m, places in moves.items() if places)
        move = first if step == 0 and first in applicable else draw(st.sampled_from(applicable))
        place = draw(st.sampled_from(moves[move]))
        target, name = place if isinstance(place, tuple) else (None, place)
        if move in LEAF_MOVES:
            _leaf_move(move, target["properties"][name], draw)
        elif move in ("add optional", "add required"):
            target["properties"][name] = copy.deepcopy(draw(st.sampled_from(LEAVES)))
            if move == "add required":
                target["required"].append(name)
        elif move == "remove field":
            del target["properties"][name]
            target["required"] = [r for r in target["required"] if r != name]
        elif move == "make required":
            target["required"].append(name)
        elif move == "make optional":
            target["required"].remove(name)
        elif move == "replace field":
            target["properties"][name] = copy.deepcopy(draw(st.sampled_from(LEAVES)))
        elif move == "description":
            target["description"] = draw(st.text(max_size=5))
        elif move == "new container":
            new["properties"].setdefault(f"c{draw(st.integers(0, 5))}", {
                "type": "object", "additionalProperties": copy.deepcopy(draw(st.sampled_from(LEAVES)))})
        elif move == "remove container":
            for key in [name, *(k for k, p in new["properties"].items() if p.get("x-counter-for") == name)]:
                del new["properties"][key]
        elif move == "u64":
            new["$defs"]["u64"]["maximum"] = draw(st.sampled_from([2**63 - 1, U64, 4294967295]))
        elif move == "new counter":
            new["properties"].setdefault(f"next_{containers[0]}_x", {"$ref": "#/$defs/u64",
                                                                     "x-counter-for": containers[0]})
        elif move == "container members":
            holder = new["properties"][name]
            holder["items" if holder["type"] == "array" else "additionalProperties"] = copy.deepcopy(
                draw(st.sampled_from(LEAVES)))
    return new


def values_of(node: Any, schema: dict[str, Any], top: int = 0) -> st.SearchStrategy[Any]:
    """Values a release writes for a schema node: only the fields it names (containers hold at
    least `top` members)."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    if "enum" in node:
        return st.sampled_from(node["enum"])
    types = node.get("type")
    if types is None:
        return ANY
    kinds = types if isinstance(types, list) else [types]
    options = []
    for kind in kinds:
        if kind == "null":
            options.append(st.none())
        elif kind == "string":
            options.append(TIMESTAMPS if node.get("format") == "date-time" else st.text(max_size=5))
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "integer":
            options.append(st.integers(node.get("minimum", -(2**63)), node.get("maximum", 2**63 - 1)))
        elif kind == "array":
            options.append(st.lists(values_of(node.get("items", {}), schema), min_size=top, max_size=3))
        elif "properties" in node:
            required = set(node.get("required", ()))
            fields = {k: values_of(v, schema) for k, v in node["properties"].items()}
            options.append(st.fixed_dictionaries({k: s for k, s in fields.items() if k in required},
                                                 optional={k: s for k, s in fields.items() if k not in required}))
        else:
            options.append(st.dictionaries(st.text(max_size=4), values_of(node.get("additionalProperties", {}), schema),
                                           min_size=top, max_size=3))
    return st.one_of(options)


def stores_of(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Stores with every top-level key, each container holding a member or more: where a change
    can break a reader."""
    return st.fixed_dictionaries({key: (st.integers(0, schema["$defs"]["u64"]["maximum"]) if "x-counter-for" in prop
                                        else values_of(prop, schema, top=1))
                                  for key, prop in schema["properties"].items()})


def validator(schema: dict[str, Any]) -> validate.StoreValidator:
    """The project's own validator for a schema given as a dict."""
    return validate.StoreValidator(kind_from_schema("auth", schema))


@pytest.mark.parametrize("move", MOVES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_when_schema_diff_says_safe_every_store_either_release_writes_is_readable_under_both(
    move: str, data: st.DataObject
) -> None:
    """For each kind of change (the first one made; more may follow): when the verdict is safe,
    stores either release writes are read by both. An unsafe verdict has nothing to prove here."""
    old = data.draw(store_schemas())
    new = data.draw(mutated(old, move))
    changes = schemadiff.diff_schemas(old, new)
    if not all(c.safe for c in changes):
        return
    readers = {"old": validator(old), "new": validator(new)}
    for writer in ("old", "new", "old", "new"):
        store = data.draw(stores_of(old if writer == "old" else new))
        for release in sorted(readers, key=lambda r: r != writer):  # its writer's first: one it could write
            assert readers[release].validate(store, None).readable, (writer, release, [c.to_json() for c in changes])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_change_has_a_pointer_a_verdict_and_a_sentence(data: st.DataObject) -> None:
    """And a schema compared with itself has no change."""
    old = data.draw(store_schemas())
    assert schemadiff.diff_schemas(old, copy.deepcopy(old)) == []
    new = data.draw(mutated(old))
    for change in schemadiff.diff_schemas(old, new):
        assert change.pointer.startswith("#") and change.sentence
        assert change.breaks in (SAFE, OLD, NEW, BOTH)
