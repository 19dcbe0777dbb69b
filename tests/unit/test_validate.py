"""Service-compatibility validation, with cases generated from the schema files.

For every record type and every field: the valid record passes; a dropped required field, null
in a non-optional field, each wrong type, integers at max+1 and -1, float-written integers,
unknown or wrongly cased enum values and bad timestamps fail; optional fields absent or null
pass; unknown extra fields pass. Every case is also run through both validators (the compiled
msgspec types and the jsonschema package) and they must agree.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from store_migrate.core.stores import KIND_ORDER, store_kind
from store_migrate.readable import jsonio, typed, validate

TS = "2026-03-04T05:06:07Z"
Placer = Callable[[dict[str, Any]], dict[str, Any]]


def schema(kind: str) -> dict[str, Any]:
    return store_kind(kind).schema


def resolve(kind: str, node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return schema(kind)["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def valid(kind: str, node: dict[str, Any]) -> Any:
    node = resolve(kind, node)
    if "enum" in node:
        return next(v for v in node["enum"] if v is not None)
    types = node.get("type")
    kind_name = next((t for t in types if t != "null"), None) if isinstance(types, list) else types
    if kind_name is None:
        return {"free": [1, None, "x"]}
    if kind_name == "string":
        return TS if node.get("format") == "date-time" else "x"
    if kind_name == "boolean":
        return True
    if kind_name == "integer":
        return 1
    if kind_name == "array":
        return [valid(kind, node["items"])]
    if "properties" in node:
        return {name: valid(kind, sub) for name, sub in node["properties"].items()}
    return {"k": valid(kind, node.get("additionalProperties", {}))}


def placements(kind: str) -> dict[str, Placer]:
    """For each record type, a function that puts one record where the store holds such records."""
    found: dict[str, Placer] = {}
    for key, prop in schema(kind)["properties"].items():
        member = prop.get("additionalProperties", prop.get("items"))
        if member is None:
            continue
        wrap: Callable[[Any], Any] = (lambda r: {"r1": r}) if prop["type"] == "object" else (lambda r: [r])
        if member.get("type") == "array":
            inner, outer = member["items"], wrap
            wrap = lambda r, outer=outer: outer([r])  # noqa: E731
            member = inner
        if "$ref" not in member:  # map[str]: no record type here
            continue
        name = member["$ref"].removeprefix("#/$defs/")
        found[name] = lambda record, key=key, wrap=wrap: {key: wrap(record)}
    # records nested inside other records (OrgMembership inside UserRecord.memberships)
    for name, definition in schema(kind)["$defs"].items():
        for field, sub in definition.get("properties", {}).items():
            ref = sub.get("items", {}).get("$ref", "")
            if ref and name in found:
                inner_name = ref.removeprefix("#/$defs/")
                parent = valid(kind, {"$ref": f"#/$defs/{name}"})

                def place(record: Any, parent: Any = parent, field: str = field, outer: Placer = found[name]) -> Any:
                    holder = copy.deepcopy(parent)
                    holder[field] = [record]
                    return outer(holder)

                found[inner_name] = place
    return found


def record_types() -> Iterator[tuple[str, str]]:
    for kind in KIND_ORDER:
        for name, definition in schema(kind)["$defs"].items():
            if "properties" in definition:
                yield kind, name


RECORDS = list(record_types())


def verdicts(kind: str, value: Any) -> tuple[bool, bool, bool, bool]:
    """(validate(), the compiled types alone, jsonschema alone, the one-pass typed decode)."""
    checker = validate.validator(kind)
    report = validate.validate(kind, value, jsonio.encode(value))
    try:
        msgspec.convert(value, checker.root)
        compiled = True
    except msgspec.ValidationError:
        compiled = False
    detailed = not any(checker.detailed.iter_errors(value))
    try:
        decoded = typed.decode(store_kind(kind), jsonio.encode(value))
    except typed.Declined:
        one_pass = False
    else:
        one_pass = True
        assert b"".join(jsonio.CanonicalPieces(decoded)) == jsonio.encode(value)
    return report.readable, compiled, detailed, one_pass


def assert_verdict(kind: str, value: Any, readable: bool, *, one_pass: bool | None = None) -> None:
    """The verdict of every validator. The typed decode (`one_pass`) agrees with them unless told
    otherwise: it declines unknown fields (its structs would drop them) and takes what the
    transform makes readable (a null container, any counter)."""
    result = verdicts(kind, value)
    expected = (readable, readable, readable, readable if one_pass is None else one_pass)
    assert result == expected, f"expected readable={readable}, got {result}"


def cases_for(kind: str, field: str, sub: dict[str, Any], required: bool) -> Iterator[tuple[str, Any, bool]]:
    """(label, value or a `raw:` JSON text, readable?) for one field."""
    sub = resolve(kind, sub)
    types = sub.get("type")
    nullable = (isinstance(types, list) and "null" in types) or None in sub.get("enum", []) or not types and "enum" not in sub
    yield "null", None, nullable
    yield "absent", ..., not required
    if "enum" in sub:
        first = next(v for v in sub["enum"] if v is not None)
        yield "unknown-enum", "bogus_value", False
        yield "upper-cased-enum", first.upper(), False
        yield "enum-number", 1, False
        return
    kind_name = next((t for t in types if t != "null"), None) if isinstance(types, list) else types
    if kind_name is None:  # any
        for label, value in (("object", {"a": 1}), ("array", [1]), ("string", "s"), ("number", 2.5)):
            yield f"any-{label}", value, True
        return
    if kind_name == "string" and sub.get("format") == "date-time":
        for label, value, ok in (
            ("offset-and-fraction", "2026-03-04T05:06:07.123456+02:00", True),
            ("lower-t-z", "2026-03-04t05:06:07z", True),
            ("leap-day", "2024-02-29T00:00:00Z", True),
            ("date-only", "2026-03-04", False),
            ("no-zone", "2026-03-04T05:06:07", False),
            ("month-13", "2026-13-04T05:06:07Z", False),
            ("feb-30", "2026-02-30T05:06:07Z", False),
            ("feb-29-not-leap", "2023-02-29T00:00:00Z", False),
            ("offset-without-colon", "2026-03-04T05:06:07+0200", False),
            ("space-separator", "2026-03-04 05:06:07Z", False),
            ("non-ascii-digit", "2026-03-04T05:06:0\u0667Z", False),
            ("fullwidth-digit", "\uff12026-03-04T05:06:07Z", False),
            ("number", 20260304, False),
        ):
            yield f"ts-{label}", value, ok
        return
    if kind_name == "string":
        for label, value in (("number", 1), ("bool", True), ("array", ["x"]), ("object", {"x": "y"})):
            yield f"str-{label}", value, False
        return
    if kind_name == "boolean":
        for label, value in (("zero", 0), ("one", 1), ("string", "true")):
            yield f"bool-{label}", value, False
        return
    if kind_name == "integer":
        top = sub["maximum"]
        yield "int-max", top, True
        yield "int-zero", 0, True
        yield "int-max+1", top + 1, False
        yield "int-minus-1", -1, False
        yield "int-7.0", "raw:7.0", False
        yield "int-7e0", "raw:7e0", False
        yield "int-string", "7", False
        yield "int-bool", True, False
        return
    if kind_name == "array":
        yield "array-of-wrong-items", [1], False
        yield "array-as-string", "x", False
        yield "array-empty", [], True
        return
    raise AssertionError(f"no cases for {sub}")


def build(kind: str, record_name: str, field: str, value: Any) -> Any:
    record = valid(kind, {"$ref": f"#/$defs/{record_name}"})
    if value is ...:
        del record[field]
    elif isinstance(value, str) and value.startswith("raw:"):
        record[field] = "__RAW__"
    else:
        record[field] = value
    store = placements(kind)[record_name](record)
    if isinstance(value, str) and value.startswith("raw:"):
        text = jsonio.encode(store).replace(b'"__RAW__"', value[4:].encode())
        return jsonio.decode(text)
    return store


FIELD_CASES = [
    pytest.param(kind, name, field, label, value, ok, id=f"{name}.{field}:{label}")
    for kind, name in RECORDS
    for field, sub in schema(kind)["$defs"][name]["properties"].items()
    for label, value, ok in cases_for(kind, field, sub, field in schema(kind)["$defs"][name].get("required", []))
]


def test_schemas_are_valid_2020_12_and_every_record_type_is_placed() -> None:
    for kind in KIND_ORDER:
        Draft202012Validator.check_schema(schema(kind))
        assert {name for k, name in RECORDS if k == kind} == set(placements(kind))
    assert len(RECORDS) == 22 and len(FIELD_CASES) > 900


@pytest.mark.parametrize(("kind", "name"), RECORDS, ids=[n for _, n in RECORDS])
def test_valid_record_passes_and_unknown_fields_are_ignored(kind: str, name: str) -> None:
    record = valid(kind, {"$ref": f"#/$defs/{name}"})
    assert_verdict(kind, placements(kind)[name](record), True)
    record["field_from_a_newer_release"] = {"anything": [1, 2]}
    assert_verdict(kind, placements(kind)[name](record), True, one_pass=False)


@pytest.mark.parametrize(("kind", "name", "field", "label", "value", "ok"), FIELD_CASES)
def test_field_case(kind: str, name: str, field: str, label: str, value: Any, ok: bool) -> None:
    store = build(kind, name, field, value)
    assert_verdict(kind, store, ok)
    if not ok:
        report = validate.validate(kind, store, None)
        assert report.unreadable == 1
        assert report.problems and re.search(rf"\.{field}(\[0\])?$", report.problems[0].pointer), report.problems


def test_pointer_and_message_name_the_path_and_the_reason() -> None:
    store = {"sessions": {"s1": valid("auth", {"$ref": "#/$defs/SessionRecord"})}}
    store["sessions"]["s1"]["status"] = "Active"
    report = validate.validate("auth", store, None)
    assert [(p.pointer, p.message) for p in report.problems] == [
        ("$.sessions[#0].status",
         "is not one of the values the service knows: active, reauth_required, expired, revoked"),
    ]


def test_messages_never_quote_values() -> None:
    secret = "oa_rt_0123456789abcdef"
    store = {"sessions": {"s1": {**valid("auth", {"$ref": "#/$defs/SessionRecord"}), "status": secret,
                                 "issued_at": secret, "reauth_required": secret}}}
    report = validate.validate("auth", store, None)
    assert len(report.problems) == 3
    assert all(secret not in p.message and secret not in p.pointer for p in report.problems)


def test_top_level_rules() -> None:
    assert_verdict("auth", {}, True)  # missing keys read as empty
    assert_verdict("auth", {"sessions": None}, False, one_pass=True)
    assert_verdict("auth", {"sessions": []}, False)
    assert_verdict("domain", {"next_shout_id": 2**64 - 1}, True)
    assert_verdict("domain", {"next_shout_id": 2**64}, False, one_pass=True)
    assert_verdict("domain", {"next_shout_id": None}, False, one_pass=True)
    assert_verdict("domain", {"next_shout_id": 1.0}, False, one_pass=True)
    report = validate.validate("auth", [], None)
    assert not report.readable and report.problems[0].pointer == "$"


def test_limit_keeps_the_first_problems_but_counts_all() -> None:
    store = {"shouts": [{"id": "bad"} for _ in range(50)]}
    report = validate.validate("domain", store, None, limit=5)
    assert report.unreadable == 50 and len(report.problems) == 5


def deep_profile(depth: int) -> dict[str, Any]:
    """A domain store whose deepest array sits at `depth` (root object = level 1)."""
    profile = valid("domain", {"$ref": "#/$defs/AutopilotProfileRecord"})
    value: Any = []
    for _ in range(depth - 4):  # root 1, autopilot_profiles 2, record map value 3, array 4..depth
        value = [value]
    profile["onboarding_answers"] = value
    return {"autopilot_profiles": {"a1": profile}}


@pytest.mark.parametrize("depth", [127, 128])
def test_depth_127_passes_and_128_fails_inside_an_any_field(depth: int) -> None:
    store = deep_profile(depth)
    report = validate.validate("domain", store, jsonio.encode(store))
    assert report.readable is (depth < 128)
    if depth == 128:
        assert report.problems[0].pointer == "$.autopilot_profiles[#0]"
