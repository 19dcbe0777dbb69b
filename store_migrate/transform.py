"""The backfill transform: a parsed store in, the current shape out, plus what changed. No I/O.

Rows may be dicts (the general path) or structs (typed.py); top-level members are a dict either way.

Rules (README, "What the backfill does"):
- the root must be an object;
- every container key of the kind is present with its type: absent, `null` or the *other* empty
  container becomes `{}` / `[]`; any other value is refused (migrating it would drop data);
- every counter becomes max(current, min(max row id + 1, 2^64-1)), where ids and the current
  counter count only when they are valid u64 values (digit strings count for ids);
- unknown keys are kept untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .stores import Container, StoreKind

U64_MAX = 2**64 - 1
TRANSFORM_VERSION = 1
"""Bumped whenever the transform could produce different bytes for the same input."""

_EMPTY: dict[Container, type] = {"object": dict, "array": list}
_OTHER: dict[Container, type] = {"object": list, "array": dict}


class ShapeRefusal(Exception):
    """The value cannot be brought to the current shape without losing data."""

    def __init__(self, reason: str, pointer: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pointer = pointer


@dataclass(frozen=True)
class CounterChange:
    name: str
    before: Any
    after: int


@dataclass
class TransformResult:
    value: dict[str, Any]
    added_keys: list[str] = field(default_factory=list)
    replaced_keys: list[str] = field(default_factory=list)
    counters: list[CounterChange] = field(default_factory=list)


def row_id(row: Any) -> int:
    """A row's id for counter purposes: a u64 integer, or a `+`/digits string up to 2^64-1; else 0.
    A row is an object: a dict, or a struct of typed.py (an absent id reads as UNSET)."""
    if isinstance(row, dict):
        value = row.get("id")
    elif isinstance(row, msgspec.Struct):
        value = getattr(row, "id", None)
    else:
        return 0
    if type(value) is int:
        return value if 0 <= value <= U64_MAX else 0
    if type(value) is str:
        digits = value[1:] if value.startswith("+") else value
        if digits.isascii() and digits.isdigit():
            number = int(digits)
            return number if number <= U64_MAX else 0
    return 0


def rows_of(container: Any) -> Iterable[Any]:
    if isinstance(container, dict):
        return container.values()
    if isinstance(container, list):
        return container
    return ()


def next_id(rows: Any) -> int:
    """min(max id + 1, 2^64-1) over the rows; 1 when there are none."""
    highest = max((row_id(row) for row in rows_of(rows)), default=0)
    return min(highest + 1, U64_MAX)


def counter_value(value: Any) -> int:
    """The current counter when it is a valid u64, else 0."""
    return value if type(value) is int and 0 <= value <= U64_MAX else 0


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"a non-empty object ({len(value)} members)"
    if isinstance(value, list):
        return f"a non-empty array ({len(value)} items)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def backfill(kind: StoreKind, value: Any) -> TransformResult:
    """Bring `value` to the current shape of `kind`. Mutates and returns the top-level object."""
    if not isinstance(value, dict):
        raise ShapeRefusal(f"the root is {_json_type(value)}, not an object", "$")
    result = TransformResult(value)
    for key, container in kind.containers.items():
        current = value.get(key, _ABSENT)
        if isinstance(current, _EMPTY[container]):
            continue
        if current is _ABSENT:
            result.added_keys.append(key)
        elif current is None or (isinstance(current, _OTHER[container]) and not current):
            result.replaced_keys.append(key)
        else:
            raise ShapeRefusal(
                f"top-level key {key!r} must hold an {container} but holds {_describe(current)}",
                f"$.{key}",
            )
        value[key] = _EMPTY[container]()
    for counter in kind.counters:
        before = value.get(counter.name)
        after = max(counter_value(before), next_id(value[counter.rows_key]))
        if type(before) is not int or before != after:
            result.counters.append(CounterChange(counter.name, before, after))
        value[counter.name] = after
    return result


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return _describe(value)


class _Absent:
    pass


_ABSENT: Any = _Absent()


def counts(kind: StoreKind, value: dict[str, Any]) -> dict[str, int]:
    """The manifest counts of a store in the current shape."""
    result: dict[str, int] = {}
    for spec in kind.counts:
        container = value.get(spec.key)
        if spec.method == "entries":
            result[spec.name] = len(container) if isinstance(container, (dict, list)) else 0
        else:
            result[spec.name] = sum(
                len(items) for items in rows_of(container) if isinstance(items, list)
            )
    return result


def shape_problems(kind: StoreKind, value: Any) -> list[str]:
    """Why `value` is not in the current shape (empty when it is). Used by verify."""
    if not isinstance(value, dict):
        return [f"the root is {_json_type(value)}, not an object"]
    problems = []
    for key, container in kind.containers.items():
        if key not in value:
            problems.append(f"top-level key {key!r} is missing")
        elif not isinstance(value[key], _EMPTY[container]):
            problems.append(f"top-level key {key!r} is {_json_type(value[key])}, not an {container}")
    for counter in kind.counters:
        current = value.get(counter.name)
        needed = next_id(value.get(counter.rows_key))
        if type(current) is not int or not 0 <= current <= U64_MAX:
            problems.append(f"counter {counter.name!r} is missing or not a u64 integer")
        elif current < needed:
            problems.append(
                f"counter {counter.name!r} is {current}, at or below an existing id "
                f"of {counter.rows_key!r} (needs at least {needed})"
            )
    return problems
