"""The store kinds, read from the JSON Schema files in schemas/.

The schema files are the single source of truth for store shapes. From each file this module
derives what the transform, the counts and verify need:

- every top-level property with `"type": "object"` or `"type": "array"` is a container key;
- every top-level property with `"x-counter-for": "<rows key>"` is an id counter over those rows;
- `x-store-migrate` at the root names the kind, its environment variables, its default file
  name and the manifest counts.

Adding a key to a store is a change to its schema file and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from store_migrate.errors import SchemaFileError

KIND_ORDER: tuple[str, ...] = ("auth", "codex_threads", "domain")
"""Store kinds in manifest order."""

Container = Literal["object", "array"]
CountMethod = Literal["entries", "items_of_entries"]


@dataclass(frozen=True)
class Counter:
    name: str
    rows_key: str


@dataclass(frozen=True)
class CountSpec:
    """A manifest count: `entries` counts members of the container; `items_of_entries` sums the
    lengths of the arrays held in it (messages across threads)."""

    name: str
    key: str
    method: CountMethod


@dataclass(frozen=True)
class StoreKind:
    name: str
    env_var: str
    service_env_var: str
    default_file: str
    containers: dict[str, Container]
    counters: tuple[Counter, ...]
    counts: tuple[CountSpec, ...]
    schema: dict[str, Any]


def _schema_text(name: str) -> str:
    resource = resources.files("store_migrate").joinpath("schemas", name)
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SchemaFileError(
            f"schema file {name} is missing from the installed package",
            hint="reinstall store-migrate",
        ) from exc


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema file `schemas/<name>`."""
    try:
        schema = json.loads(_schema_text(name))
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"schema file {name} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaFileError(f"schema file {name} does not hold a JSON object")
    return schema


def kind_from_schema(name: str, schema: dict[str, Any]) -> StoreKind:
    """The kind a schema describes: an installed file's (`store_kind`), or another version of it
    given as a dict (as schema-diff compares them; `validate.StoreValidator(kind_from_schema(...))`
    validates stores against it). Raises SchemaFileError when the schema does not say what the
    tool needs."""
    meta = schema.get("x-store-migrate")
    if not isinstance(meta, dict) or meta.get("kind") != name:
        raise SchemaFileError(f"schemas/{name}.schema.json lacks x-store-migrate.kind = {name!r}")
    containers: dict[str, Container] = {}
    counters: list[Counter] = []
    for key, prop in schema.get("properties", {}).items():
        if "x-counter-for" in prop:
            counters.append(Counter(key, prop["x-counter-for"]))
        elif prop.get("type") in ("object", "array"):
            containers[key] = prop["type"]
        else:
            raise SchemaFileError(
                f"schemas/{name}.schema.json: top-level property {key!r} is neither a container "
                "(type object/array) nor a counter (x-counter-for)"
            )
    for counter in counters:
        if counter.rows_key not in containers:
            raise SchemaFileError(
                f"schemas/{name}.schema.json: counter {counter.name!r} counts rows of "
                f"{counter.rows_key!r}, which is not a container key"
            )
    counts = tuple(CountSpec(c["name"], c["key"], c["of"]) for c in meta.get("counts", ()))
    for spec in counts:
        if spec.key not in containers or spec.method not in ("entries", "items_of_entries"):
            raise SchemaFileError(f"schemas/{name}.schema.json: bad count {spec}")
    return StoreKind(
        name=name,
        env_var=meta["env"],
        service_env_var=meta["service_env"],
        default_file=meta["default_file"],
        containers=containers,
        counters=tuple(counters),
        counts=counts,
        schema=schema,
    )


@cache
def store_kind(name: str) -> StoreKind:
    if name not in KIND_ORDER:
        raise SchemaFileError(f"unknown store kind {name!r} (known: {', '.join(KIND_ORDER)})")
    return kind_from_schema(name, load_schema(f"{name}.schema.json"))


def all_kinds() -> tuple[StoreKind, ...]:
    return tuple(store_kind(name) for name in KIND_ORDER)
