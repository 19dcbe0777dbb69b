""""Can the service read this store?": the schemas in schemas/ plus the rules they cannot say.

Two validators are built from each schema file, and must agree (a test checks it on the whole
test corpus):

- a compiled one: msgspec types generated from the schema (structs.py), run over the parsed store in C
  (about 0.9 s for a 180 MB codex store), for the yes/no answer;
- the `jsonschema` package, run only on the records the compiled check rejected, for messages
  that name the JSON path and the reason.

What JSON Schema cannot say, enforced here:
- an integer written with a fraction or exponent (`7.0`, `7e0`) is not a u16/u32/u64, although
  JSON Schema counts it as an integer: both validators accept only JSON integers;
- `format: date-time` is asserted (not just annotated) with one RFC 3339 rule shared by both:
  ASCII digits, `T` or `t` between date and time, a zone (`Z` or `+hh:mm`), and a real calendar
  date;
- arrays/objects nested 128 levels deep or more (the root object is level 1) cannot be read,
  anywhere in the file: checked on the indented bytes, see `jsonio.nesting_too_deep`.

Problems never quote store contents (stores hold tokens and e-mail addresses, as values and as
map keys): a message says what is wrong, and a pointer names the schema's fields by name and a
map's members by their position in code-point-sorted key order, `$.access_index[#12]`
(redact.Positions; the README shows how jq finds that member).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

import msgspec

from store_migrate.core.redact import Positions, decoder_message
from store_migrate.core.stores import StoreKind, store_kind
from store_migrate.readable import jsonio, structs

if TYPE_CHECKING:
    from jsonschema import ValidationError

DEFAULT_LIMIT = 20
RFC3339 = structs.RFC3339
_U_NAMES = {65535: "u16", 4294967295: "u32", 18446744073709551615: "u64"}


@dataclass(frozen=True)
class Problem:
    pointer: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


@dataclass
class Report:
    kind: str
    problems: list[Problem] = field(default_factory=list)
    """The first problems found (at most the limit asked for)."""
    unreadable: int = 0
    """How many records (and top-level values) the service cannot read."""

    @property
    def readable(self) -> bool:
        return self.unreadable == 0 and not self.problems


# ------------------------------------------------------------------ the detailed validator


def _is_json_integer(_: Any, instance: Any) -> bool:
    return type(instance) is int


def _is_rfc3339(instance: object) -> bool:
    return not isinstance(instance, str) or RFC3339.match(instance) is not None


@cache
def _detailed_class() -> tuple[Any, Any]:
    """The jsonschema validator class with this module's integer rule, and the format checker
    asserting RFC 3339; imported only when a store has problems to explain (about 30 ms)."""
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.validators import extend

    validator_class = extend(
        Draft202012Validator,
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_json_integer),
    )
    formats = FormatChecker(formats=())
    formats.checks("date-time")(_is_rfc3339)
    return validator_class, formats


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


_TYPE_WORDS = {"string": "a string", "boolean": "true or false", "integer": "an integer",
               "object": "an object", "array": "an array", "null": "null"}


def _message(error: ValidationError) -> tuple[str, str | None]:
    """An operator's message for one schema error, and the field it is about (if not the path's)."""
    validator, expected, instance = error.validator, error.validator_value, error.instance
    if validator == "required":
        missing = error.message.split("'")[1] if error.message.count("'") >= 2 else "?"
        return "required field is missing", missing
    if validator == "type":
        wanted = [t for t in (expected if isinstance(expected, list) else [expected])]
        if instance is None and len(error.absolute_path) == 1:
            return "is null: the service fails on a null top-level key (a missing one reads as empty)", None
        if instance is None:
            return "is null, but this field is required to hold a value", None
        if "integer" in wanted and isinstance(instance, float):
            return (
                "is written with a fraction or exponent; the service reads only plain integers (7, not 7.0 or 7e0)",
                None,
            )
        words = " or ".join(_TYPE_WORDS[t] for t in wanted)
        return f"expected {words}, found {json_type(instance)}", None
    if validator in ("minimum", "maximum"):
        high = error.schema.get("maximum")
        name = _U_NAMES.get(high, "integer")
        return f"is outside the {name} range 0..{high}", None
    if validator == "enum":
        allowed = ", ".join(str(v) for v in expected if v is not None)
        nullable = " (or null)" if None in expected else ""
        return f"is not one of the values the service knows: {allowed}{nullable}", None
    if validator == "format":
        return "is not an RFC 3339 timestamp with a time zone (like 2026-03-04T05:06:07Z)", None
    return f"fails the schema's {validator!r} rule", None


def _pointer(error: ValidationError, value: Any, path: list[Any], positions: Positions) -> str:
    """`$.sessions[#3].status` for a schema error: `path` is the error's instance path in the
    store `value` itself. Names from the schema stay readable; a map member is named by its
    position (redact.Positions), never by its key."""
    named, i = set(), 0
    keywords = iter(error.absolute_schema_path)
    for keyword in keywords:
        if i >= len(path):
            break
        if keyword == "properties":
            next(keywords)
            named.add(i)
        elif keyword not in ("additionalProperties", "items", "prefixItems"):
            continue
        i += 1
    text, node = "$", value
    for i, part in enumerate(path):
        if isinstance(part, int):
            text += f"[{part}]"
        elif i in named:
            text += _field(part)
        else:
            text += positions.member(node, part)
        node = node[part]
    return text


def _field(name: str) -> str:
    return f".{name}" if re.fullmatch(r"[A-Za-z_]\w*", name) else f"[{json.dumps(name, ensure_ascii=False)}]"


# ------------------------------------------------------------------------------ validation


@dataclass
class StoreValidator:
    """A kind's two validators, each built when first needed: a store that typed.decode took
    needs neither (checking the schema file against the metaschema alone costs 60 ms a kind)."""

    kind: StoreKind

    @cached_property
    def root(self) -> Any:
        return structs.tolerant_root(self.kind)

    @cached_property
    def members(self) -> dict[str, Any]:
        return structs.tolerant_members(self.kind)

    @cached_property
    def detailed(self) -> Any:
        validator_class, formats = _detailed_class()
        validator_class.check_schema(self.kind.schema)
        return validator_class(self.kind.schema, format_checker=formats)

    def validate(
        self, value: Any, indented: bytes | None, *, limit: int = DEFAULT_LIMIT, typed: bool = False
    ) -> Report:
        """Validate a parsed store. `indented` is the store as jsonio.encode/format wrote it (for
        the nesting rule); None skips that rule (the caller has checked it). `typed`: the value
        came from typed.decode, whose exact types already proved every record readable, so only
        the nesting rule is left."""
        report = Report(self.kind.name)
        positions = Positions()
        too_deep = indented is not None and jsonio.nesting_too_deep(indented)
        if too_deep:
            report.unreadable += 1
            report.problems.append(Problem(
                self._deep_pointer(value, positions),
                f"arrays/objects nest {jsonio.MAX_DEPTH} levels deep or more; the service's reader gives up",
            ))
        if typed:
            return report
        try:
            msgspec.convert(value, self.root)
        except msgspec.ValidationError as compiled:
            self._explain(value, report, limit, str(compiled), positions)
        del report.problems[limit:]
        return report

    def _explain(self, value: Any, report: Report, limit: int, compiled: str, positions: Positions) -> None:
        """Find and describe every value the compiled check rejects (slow path, failures only)."""
        before = report.unreadable
        if not isinstance(value, dict):
            report.unreadable += 1
            report.problems.append(Problem("$", f"the root is {json_type(value)}, not an object"))
            return
        shallow = {k: (type(v)() if k in self.members and isinstance(v, (dict, list)) else v) for k, v in value.items()}
        top = sorted(self.detailed.iter_errors(shallow), key=lambda e: list(e.absolute_path))
        if top:
            report.unreadable += len({e.absolute_path[0] if e.absolute_path else "" for e in top})
            self._add(report, [(e, list(e.absolute_path)) for e in top], value, positions, limit)
        for key, member_type in self.members.items():
            container = value.get(key)
            if isinstance(container, dict):
                members: Any = container.items()
            elif isinstance(container, list):
                members = enumerate(container)
            else:
                continue
            for member_key, member in members:
                try:
                    msgspec.convert(member, member_type)
                except msgspec.ValidationError as exc:
                    report.unreadable += 1
                    if len(report.problems) < limit:
                        self._detail(report, value, key, member_key, str(exc), positions, limit)
        if report.unreadable == before:
            report.unreadable += 1
            report.problems.append(Problem("$", f"rejected by the compiled check: {decoder_message(compiled)}"))

    def _detail(
        self, report: Report, value: dict[str, Any], key: str, member_key: Any, compiled: str, positions: Positions,
        limit: int,
    ) -> None:
        """Explain one rejected member of the container `value[key]`, checked on its own under
        its top-level key (the pointers still name its place in `value`)."""
        member = value[key][member_key]
        wrapper: Any = {key: [member]} if isinstance(member_key, int) else {key: {member_key: member}}
        errors = sorted(self.detailed.iter_errors(wrapper), key=lambda e: list(e.absolute_path))
        if errors:
            in_value = [(e, [key, member_key, *list(e.absolute_path)[2:]]) for e in errors]
            self._add(report, in_value, value, positions, limit)
        else:  # the two validators disagree: say so rather than hide the compiled verdict
            where = f"$.{key}" + (
                f"[{member_key}]" if isinstance(member_key, int) else positions.member(value[key], member_key)
            )
            report.problems.append(Problem(where, f"rejected by the compiled check: {decoder_message(compiled)}"))

    @staticmethod
    def _add(
        report: Report, errors: list[tuple[ValidationError, list[Any]]], value: Any, positions: Positions, limit: int
    ) -> None:
        """Each schema error with its instance path in `value`, as a problem."""
        for error, path in errors:
            if len(report.problems) >= limit:
                return
            message, about = _message(error)
            pointer = _pointer(error, value, path, positions) + (_field(about) if about else "")
            report.problems.append(Problem(pointer, message))

    def _deep_pointer(self, value: Any, positions: Positions) -> str:
        """The top-level key (and member) under which the nesting limit is reached."""
        if not isinstance(value, dict):
            return "$"
        for key, held in value.items():
            if _depth_reaches(held, jsonio.MAX_DEPTH - 1):
                where = "$" + (_field(key) if key in self.kind.schema["properties"] else positions.member(value, key))
                members: Any = held.items() if isinstance(held, dict) else enumerate(held)
                for member_key, member in members:
                    if _depth_reaches(member, jsonio.MAX_DEPTH - 2):
                        return where + (positions.member(held, member_key) if isinstance(held, dict)
                                        else f"[{member_key}]")
                return where
        return "$"


def _depth_reaches(value: Any, levels: int) -> bool:
    if not isinstance(value, (dict, list)):
        return False
    return jsonio.nesting_too_deep(jsonio.encode(value), levels)


@cache
def validator(kind_name: str) -> StoreValidator:
    return StoreValidator(store_kind(kind_name))


def validate(
    kind_name: str, value: Any, indented: bytes | None, *, limit: int = DEFAULT_LIMIT, typed: bool = False
) -> Report:
    """Can the service read this parsed store? See the module docstring for the rules."""
    return validator(kind_name).validate(value, indented, limit=limit, typed=typed)


