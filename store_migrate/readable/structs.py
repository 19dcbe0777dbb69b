"""msgspec types generated from a store schema (schemas/), in two flavours.

- tolerant (`exact=False`): what the service accepts. Unknown fields are ignored, timestamps are
  checked by a pattern and u64 ceilings by `__post_init__`. validate.py converts a parsed store
  into these for its yes/no answer.
- exact (`exact=True`): for decoding a store straight from its bytes without losing anything.
  Unknown fields are refused (a struct would drop them), an absent optional field stays absent
  (`UNSET`, never turned into null), fields are declared in code-point order so that encoding
  the structs gives the canonical key order without sorting, and the two checks a struct type
  cannot make cheaply (RFC 3339 timestamps, u64 ceilings) are left to `Leaves`: every such value
  in a decoded store, pulled out with C-level iteration and checked in bulk (about 0.15 s for
  the 580,000 timestamps of a 200 MB codex store, against 0.45 s for a per-field pattern).

Only the subset of JSON Schema the store schemas use is understood; anything else is a
SchemaFileError, so the validators can never silently disagree about a keyword one of them
ignores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import chain
from operator import attrgetter, is_not
from typing import Annotated, Any, Literal

import msgspec

from store_migrate.core.stores import StoreKind
from store_migrate.errors import SchemaFileError

_DAY = r"(?:0[1-9]|1[0-9]|2[0-8])"
_D = "[0-9]"  # not \d, which in a str pattern also matches "٠" or "０"
RFC3339 = re.compile(
    r"\A(?:" + _D * 4 + "-(?:(?:0[13578]|1[02])-(?:" + _DAY + r"|29|3[01])|(?:0[469]|11)-(?:" + _DAY + r"|29|30)"
    r"|02-" + _DAY + r")"
    r"|(?:" + _D * 2 + "(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
    r"[Tt](?:[01]" + _D + "|2[0-3]):[0-5]" + _D + ":[0-5]" + _D + r"(?:\." + _D + "+)?"
    r"(?:[Zz]|[+-](?:[01]" + _D + "|2[0-3]):[0-5]" + _D + r")\Z"
)
"""An RFC 3339 date-time with a time zone and a real calendar date (leap years included)."""

_AWARE_DATETIMES = list[Annotated[datetime, msgspec.Meta(tz=True)]]
_OFFSET_WITHOUT_COLON = re.compile(r"[+-][0-9]{4}$", re.MULTILINE)


def all_rfc3339(strings: list[str]) -> bool:
    """Whether every string matches RFC3339, decided in C: msgspec's datetime parser, which
    accepts exactly what RFC3339 does but for a space between date and time and an offset
    written without its colon (+0100), both ruled out by a search over the strings joined;
    it also refuses year 0000, which only sends such a store down the general path.
    A differential fuzz of both (600,000 mutated timestamps) found no other difference; the
    validation corpus checks the same cases. 0.1 s for 580,000 timestamps, against 0.25 s for
    the pattern."""
    try:
        msgspec.convert(strings, _AWARE_DATETIMES)
    except msgspec.ValidationError:
        return False
    joined = "\n".join(strings)
    if " " in joined:
        return False
    if "+" not in joined and joined.count("-") == 2 * len(strings):
        return True  # every one in UTC (no offset at all): nothing more to look for
    return _OFFSET_WITHOUT_COLON.search(joined) is None


U64_MAX = 2**64 - 1
_I64_MAX = 2**63 - 1
ANNOTATIONS = {"description", "title", "$comment", "$schema", "$id", "x-store-migrate", "x-counter-for", "$defs"}
_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "minimum", "maximum", "format", "$ref",
}

Extract = Callable[[Iterable[Any]], Iterable[Any]]
"""From values of one schema node, every leaf value of interest inside them."""


def _leaf(values: Iterable[Any]) -> Iterable[Any]:
    return values


class TypeBuilder:
    """Translate a store schema's nodes into msgspec types (see the module docstring)."""

    def __init__(self, schema: dict[str, Any], *, exact: bool) -> None:
        self.defs = schema.get("$defs", {})
        self.exact = exact
        self.built: dict[str, Any] = {}

    def build(self, node: dict[str, Any], name: str) -> Any:
        unknown = set(node) - ANNOTATIONS - _KEYWORDS
        if unknown:
            raise SchemaFileError(f"schema keyword(s) {sorted(unknown)} at {name} are not supported by the validator")
        if "$ref" in node:
            return self.ref(node["$ref"])
        if "enum" in node:
            values = [v for v in node["enum"] if v is not None]
            literal: Any = Literal[tuple(values)]
            return literal | None if None in node["enum"] else literal
        types = node.get("type")
        if types is None:
            return Any
        nullable = isinstance(types, list) and "null" in types
        kinds = [t for t in (types if isinstance(types, list) else [types]) if t != "null"]
        if len(kinds) != 1:
            raise SchemaFileError(f"schema at {name}: only one non-null type is supported, got {types}")
        built = self.typed(kinds[0], node, name)
        return built | None if nullable else built

    def typed(self, kind: str, node: dict[str, Any], name: str) -> Any:
        if kind == "string":
            if is_timestamp(node) and not self.exact:
                return Annotated[str, msgspec.Meta(pattern=RFC3339.pattern)]
            return str
        if kind == "boolean":
            return bool
        if kind == "integer":
            low, high = node.get("minimum"), node.get("maximum")
            if high is not None and high > _I64_MAX:
                # msgspec bounds stop at int64; the u64 ceiling is checked apart (see the docstring).
                return Annotated[int, msgspec.Meta(ge=low)] if low is not None else int
            return Annotated[int, msgspec.Meta(ge=low, le=high)]
        if kind == "array":
            return list[self.build(node.get("items", {}), f"{name}[]")]  # type: ignore[misc]
        if kind == "object":
            if "properties" in node:
                return self.record(node, name)
            return dict[str, self.build(node.get("additionalProperties", {}), f"{name}{{}}")]  # type: ignore[misc]
        raise SchemaFileError(f"schema at {name}: type {kind!r} is not supported by the validator")

    def ref(self, ref: str) -> Any:
        name = ref.removeprefix("#/$defs/")
        if name not in self.defs:
            raise SchemaFileError(f"schema reference {ref} does not resolve")
        if name not in self.built:
            self.built[name] = self.build(self.defs[name], name)
        return self.built[name]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            name = node["$ref"].removeprefix("#/$defs/")
            if name not in self.defs:
                raise SchemaFileError(f"schema reference {node['$ref']} does not resolve")
            node = self.defs[name]
        return node

    def record(self, node: dict[str, Any], name: str) -> Any:
        required = set(node.get("required", ()))
        fields: list[Any]
        if self.exact:
            fields = [
                (prop, self.build(sub, f"{name}.{prop}"))
                if prop in required
                else (prop, self.build(sub, f"{name}.{prop}") | msgspec.UnsetType, msgspec.UNSET)
                for prop, sub in sorted(node["properties"].items())
            ]
            return self.struct(name, fields)
        fields = []
        big: list[str] = []
        for prop, sub in node["properties"].items():
            kind = self.build(sub, f"{name}.{prop}")
            if is_big(self.resolve(sub)):
                big.append(prop)
            if prop in required:
                fields.insert(0, (prop, kind))
            else:
                fields.append((prop, kind, None if _allows_null(sub) else msgspec.UNSET))
        namespace = {"__post_init__": _u64_ceiling(tuple(big))} if big else None
        return msgspec.defstruct(name, fields, namespace=namespace, forbid_unknown_fields=False)

    def struct(self, name: str, fields: list[Any], namespace: dict[str, Any] | None = None) -> Any:
        if self.exact:
            # gc=False: decoded stores hold millions of these and never form cycles.
            return msgspec.defstruct(f"{name}_exact", fields, kw_only=True, forbid_unknown_fields=True, gc=False)
        return msgspec.defstruct(name, fields, namespace=namespace, forbid_unknown_fields=False)

    def extractor(self, node: dict[str, Any], wanted: Callable[[dict[str, Any]], bool]) -> Extract | None:
        """How to pull every `wanted` leaf out of values of `node` (exact types); None when it
        holds none. Absent (UNSET) and null values are skipped on the way (both are falsy)."""
        node = self.resolve(node)
        if wanted(node):
            return _leaf
        types = node.get("type")
        kinds = set(types) if isinstance(types, list) else {types}
        if "array" in kinds:
            items = self.extractor(node.get("items", {}), wanted)
            return None if items is None else _through(items, chain.from_iterable)
        if "object" in kinds and "properties" not in node:
            members = self.extractor(node.get("additionalProperties", {}), wanted)
            return None if members is None else _through(members, _dict_values)
        if "object" in kinds:
            found = {p: self.extractor(sub, wanted) for p, sub in node["properties"].items()}
            leaves = sorted(p for p, e in found.items() if e is _leaf)
            nested = sorted((p, e) for p, e in found.items() if e is not None and e is not _leaf)
            if not leaves and not nested:
                return None
            return _record(leaves, nested)
        return None


def _through(inner: Extract, flatten: Callable[[Iterable[Any]], Iterable[Any]]) -> Extract:
    return lambda values: inner(flatten(filter(None, values)))


def _dict_values(values: Iterable[dict[str, Any]]) -> Iterable[Any]:
    return chain.from_iterable(map(dict.values, values))


def _record(leaves: list[str], nested: list[tuple[str, Extract]]) -> Extract:
    many = attrgetter(*leaves) if len(leaves) > 1 else None
    one = attrgetter(leaves[0]) if len(leaves) == 1 else None

    def extract(values: Iterable[Any]) -> Iterable[Any]:
        rows = list(filter(None, values))
        parts: list[Iterable[Any]] = []
        if many is not None:
            parts.append(chain.from_iterable(map(many, rows)))
        elif one is not None:
            parts.append(map(one, rows))
        parts.extend(inner(map(attrgetter(prop), rows)) for prop, inner in nested)
        return chain.from_iterable(parts)

    return extract


def _present(values: Iterable[Any]) -> Iterable[Any]:
    """The values that are neither absent (UNSET) nor null, filtered in C ("" and 0 stay)."""
    return filter(partial(is_not, None), filter(partial(is_not, msgspec.UNSET), values))


def is_timestamp(node: dict[str, Any]) -> bool:
    return node.get("format") == "date-time"


def is_big(node: dict[str, Any]) -> bool:
    """An integer whose maximum msgspec's bounds cannot express (above int64)."""
    types = node.get("type")
    kinds = types if isinstance(types, list) else [types]
    return "integer" in kinds and node.get("maximum", 0) > _I64_MAX


def _allows_null(node: dict[str, Any]) -> bool:
    types = node.get("type")
    return (
        "type" not in node and "enum" not in node and "$ref" not in node
        or (isinstance(types, list) and "null" in types)
        or None in node.get("enum", ())
    )


def _u64_ceiling(names: tuple[str, ...]) -> Any:
    def check(self: Any) -> None:
        for name in names:
            value = getattr(self, name)
            if type(value) is int and value > U64_MAX:
                raise ValueError(f"{name} is above the u64 maximum")

    return check


def tolerant_root(kind: StoreKind) -> Any:
    """The root type validate.py converts a transformed store into."""
    builder = TypeBuilder(kind.schema, exact=False)
    fields = []
    for key, sub in kind.schema["properties"].items():
        built = builder.build(sub, key)
        empty = {"object": dict, "array": list}.get(sub.get("type", ""))
        default = msgspec.field(default_factory=empty) if key in kind.containers and empty else 0
        fields.append((key, built, default))
    counters = tuple(c.name for c in kind.counters)
    namespace = {"__post_init__": _u64_ceiling(counters)} if counters else None
    return msgspec.defstruct(f"{kind.name}_store", fields, namespace=namespace, forbid_unknown_fields=False)


def tolerant_members(kind: StoreKind) -> dict[str, Any]:
    """Each container's member type (validate.py explains failures member by member)."""
    builder = TypeBuilder(kind.schema, exact=False)
    members = {}
    for key in kind.containers:
        sub = kind.schema["properties"][key]
        members[key] = builder.build(sub.get("additionalProperties", sub.get("items", {})), key)
    return members


@dataclass(frozen=True)
class Exact:
    """A kind's exact root type and the extractors of the values checked in bulk."""

    root: Any
    timestamps: Extract | None
    big_integers: Extract | None

    def leaf_problem(self, root: Any) -> str | None:
        """What is wrong with the timestamps and u64 values of a decoded root (None: nothing)."""
        if self.timestamps is not None:
            strings = list(_present(self.timestamps((root,))))
            if not all_rfc3339(strings):
                return "a timestamp is not RFC 3339"
        if self.big_integers is not None:
            numbers = list(_present(self.big_integers((root,))))
            if numbers and max(numbers) > U64_MAX:
                return "an integer is above the u64 maximum"
        return None


def exact(kind: StoreKind) -> Exact:
    """The exact types of a kind. Counters are `Any` (the transform rewrites them); containers
    may be null (the transform replaces null with the empty container)."""
    builder = TypeBuilder(kind.schema, exact=True)
    fields: list[Any] = []
    checked: dict[str, Any] = {}
    for key, sub in sorted(kind.schema["properties"].items()):
        if key in kind.containers:
            fields.append((key, builder.build(sub, key) | None | msgspec.UnsetType, msgspec.UNSET))
            checked[key] = sub
        else:
            fields.append((key, Any, msgspec.UNSET))
    root = builder.struct(f"{kind.name}_store", fields)
    shape = {"type": "object", "properties": checked}
    return Exact(root, builder.extractor(shape, is_timestamp), builder.extractor(shape, is_big))
