"""`schema-diff OLD NEW`: is a schema change safe while two releases run?

During a canary the old and the new release read the same stores, each possibly written by the
other. Every change between two versions of a schema is classified, with a JSON pointer into the
schema (the new version's, or the old one's for what was removed) and a sentence:

- **safe**: a new optional field; a new top-level key (the backfill adds every top-level key of a
  store schema); an optional field removed; a documentation-only change (`description`, `title`,
  `$comment`, `examples`, `$id`); a definition no field uses.
- **unsafe for the old release** (old readers fail on what the new one writes): a new enum value,
  a wider range (integer bounds, lengths, item counts), a field made nullable, a type added, a
  removed field that was required, a field no longer required, a dropped `format` or `pattern`,
  a looser `additionalProperties`, a top-level key removed (stores the new release writes lose it).
- **unsafe for the new release** (new readers fail on existing data): a new required field the
  backfill does not add, a narrower range or a new or changed `pattern` or `format`, a removed
  enum value, a type removed (a field no longer nullable), a stricter `additionalProperties`.
- a changed type, pattern or format is unsafe for both.

Anything this module does not compare keyword by keyword (`oneOf`, `anyOf`, `allOf`, `not`,
`if`/`then`/`else`, `$schema`, unknown keywords) is unsafe for both when it changes, with a
sentence saying so: a change is called safe only when it is proven so. The verdict is safe when
every change is (`changes_safe`).

The property behind "safe" (tests/unit/test_schemadiff.py checks it with hypothesis): every store that
either release could write (generated from one schema, holding no fields beyond those it names)
is readable under both schemas, as the project's own validator (validate.py) reads them.

Schemas are compared semantically: `$ref`s are followed (a definition used in several places is
compared once, at `#/$defs/<name>`), so renaming a definition is no change, and a definition is
judged where the store's fields use it. Pure: schemas in, changes out (files are read by `load_*`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from store_migrate.errors import StoreMigrateError

log = structlog.get_logger("store_migrate")

Breaks = Literal["old", "new"]

DOCUMENTATION = ("description", "title", "$comment", "examples", "$id", "default", "deprecated")
BOUNDS = {
    # keyword: (what it bounds, True when it is a lower bound)
    "minimum": ("range", True), "exclusiveMinimum": ("range", True),
    "maximum": ("range", False), "exclusiveMaximum": ("range", False),
    "minLength": ("length", True), "maxLength": ("length", False),
    "minItems": ("number of items", True), "maxItems": ("number of items", False),
    "minProperties": ("number of members", True), "maxProperties": ("number of members", False),
}
_UNDERSTOOD = {
    "$ref", "type", "enum", "const", "format", "pattern", "multipleOf", "properties", "required",
    "additionalProperties", "items", "$defs", "x-counter-for", "x-store-migrate", *DOCUMENTATION, *BOUNDS,
}
_TYPES = {"null", "boolean", "object", "array", "number", "integer", "string"}
_FILE_SUFFIX = ".schema.json"


class SchemaDiffError(StoreMigrateError):
    """A schema that cannot be read or compared (not JSON, not a schema, a `$ref` that does not
    resolve): no verdict can be given."""


class SchemaDiffUsage(StoreMigrateError):
    """OLD and NEW cannot be compared as given (the command line was wrong)."""

    exit_code = 2


@dataclass(frozen=True)
class Change:
    file: str
    pointer: str
    """A JSON pointer (RFC 6901) into the schema file, like `#/$defs/SessionRecord/properties/status`."""
    breaks: tuple[Breaks, ...]
    """Which release fails on it: () safe, ("old",), ("new",) or ("old", "new")."""
    sentence: str

    @property
    def safe(self) -> bool:
        return not self.breaks

    @property
    def verdict(self) -> str:
        if not self.breaks:
            return "safe"
        return "unsafe for both" if len(self.breaks) == 2 else f"unsafe for the {self.breaks[0]} release"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "pointer": self.pointer, "verdict": self.verdict, "safe": self.safe,
                "unsafe_for": list(self.breaks), "sentence": self.sentence}


@dataclass
class SchemaDiff:
    old: str
    new: str
    files: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return all(c.safe for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "files": self.files, "safe": self.safe,
                "changes": [c.to_json() for c in self.changes]}


# ------------------------------------------------------------------------------ inputs


def _parse(text: bytes, where: str) -> Any:
    try:
        schema = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaDiffError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise SchemaDiffError(f"{where} is not a JSON Schema (an object or a boolean)")
    return schema


def _read(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return _parse(handle.read(), path)
    except OSError as exc:
        raise SchemaDiffError(f"cannot read {path}: {exc.strerror}") from None


def _schema_files(directory: str) -> dict[str, str]:
    return {name: os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if name.endswith(_FILE_SUFFIX)}


def diff_paths(old: str, new: str) -> SchemaDiff:
    """Compare two schema files, or two directories of them (`*.schema.json`, paired by name)."""
    if os.path.isdir(old) and os.path.isdir(new):
        olds, news = _schema_files(old), _schema_files(new)
        if not olds and not news:
            raise SchemaDiffUsage(f"neither {old} nor {new} holds a *{_FILE_SUFFIX} file")
        return diff_sets(old, new, {n: _read(p) for n, p in olds.items()}, {n: _read(p) for n, p in news.items()})
    if os.path.isfile(old) and os.path.isfile(new):
        name = os.path.basename(new) if os.path.basename(new) == os.path.basename(old) else \
            f"{os.path.basename(old)} -> {os.path.basename(new)}"
        return diff_sets(old, new, {name: _read(old)}, {name: _read(new)})
    missing = [p for p in (old, new) if not os.path.exists(p)]
    if missing:
        raise SchemaDiffUsage(f"{missing[0]} does not exist")
    raise SchemaDiffUsage(f"give two schema files or two directories, not {old} and {new}")


def _git(top: str, *args: str) -> bytes:
    done = subprocess.run(["git", "-C", top, *args], capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise SchemaDiffUsage(f"git {' '.join(args)}: {message[-1] if message else f'exit {done.returncode}'}")
    return done.stdout


def diff_against(revision: str, cwd: str = ".") -> SchemaDiff:
    """Compare `schemas/` of the git work tree holding `cwd` (NEW) with `schemas/` at `revision` (OLD)."""
    top = _git(os.path.abspath(cwd), "rev-parse", "--show-toplevel").decode().strip()
    _git(top, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    directory = os.path.join(top, "schemas")
    if not os.path.isdir(directory):
        raise SchemaDiffUsage(f"{top} has no schemas/ directory")
    listed = _git(top, "ls-tree", "--name-only", revision, "--", "schemas/").decode().splitlines()
    olds = {}
    for path in listed:
        name = os.path.basename(path)
        if name.endswith(_FILE_SUFFIX):
            olds[name] = _parse(_git(top, "show", f"{revision}:schemas/{name}"), f"{revision}:schemas/{name}")
    news = {n: _read(p) for n, p in _schema_files(directory).items()}
    return diff_sets(f"{revision}:schemas/", directory + "/", olds, news)


def diff_sets(old_label: str, new_label: str, olds: dict[str, Any], news: dict[str, Any]) -> SchemaDiff:
    """Compare schemas paired by file name."""
    result = SchemaDiff(old_label, new_label, sorted(set(olds) | set(news)))
    for name in result.files:
        if name not in olds:
            result.changes.append(Change(name, "#", (), "a new schema file: the old release does not read it"))
        elif name not in news:
            result.changes.append(Change(name, "#", ("old", "new"), "a schema file was removed: the releases "
                                         "disagree about which stores exist; review by hand"))
        else:
            result.changes.extend(diff_schemas(olds[name], news[name], name))
    log.info("schemas.compared", old=old_label, new=new_label, files=result.files, safe=result.safe,
             changes=len(result.changes), unsafe=[f"{c.file}{c.pointer}" for c in result.changes if not c.safe])
    return result


# ------------------------------------------------------------------------------ the comparison


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _types(node: dict[str, Any]) -> set[str] | None:
    """The node's types (`number` includes `integer`); None when it names none (any type)."""
    if "type" not in node:
        return None
    declared = node["type"] if isinstance(node["type"], list) else [node["type"]]
    found = {t for t in declared if isinstance(t, str)}
    return found | {"integer"} if "number" in found else found


def _values(node: dict[str, Any]) -> list[Any] | None:
    if "enum" in node and isinstance(node["enum"], list):
        return node["enum"]
    if "const" in node:
        return [node["const"]]
    return None


def _is_any(node: Any) -> bool:
    return node is True or node == {} or (isinstance(node, dict) and set(node) <= set(DOCUMENTATION))


class _Differ:
    """Compares one old schema with one new schema; see the module docstring for the rules."""

    def __init__(self, old: Any, new: Any, file: str) -> None:
        self.old_root, self.new_root = old, new
        self.file = file
        self.changes: list[Change] = []
        self.store = isinstance(old, dict) and "x-store-migrate" in old or isinstance(new, dict) and \
            "x-store-migrate" in new
        self.compared_defs: set[str] = set()
        self.inline: set[tuple[int, int]] = set()
        self.used: set[tuple[str, str]] = set()

    def add(self, pointer: str, breaks: tuple[Breaks, ...], sentence: str) -> None:
        self.changes.append(Change(self.file, pointer, breaks, sentence))

    # -- $ref

    def _def(self, root: Any, ref: str, pointer: str) -> Any:
        if not ref.startswith("#/$defs/") or not isinstance(root, dict):
            raise SchemaDiffError(f"{self.file}{pointer}: only references to #/$defs/<name> are understood, not {ref}")
        name = ref.removeprefix("#/$defs/")
        defs = root.get("$defs", {})
        if name not in defs:
            raise SchemaDiffError(f"{self.file}{pointer}: the reference {ref} does not resolve")
        return defs[name]

    def resolve(self, root: Any, node: Any, pointer: str, side: str) -> Any:
        """The node with its `$ref` replaced by the definition (its other keywords kept)."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            seen += 1
            if seen > 64:
                raise SchemaDiffError(f"{self.file}{pointer}: references go round in a circle")
            ref = node["$ref"]
            self.used.add((side, ref))
            target = self._def(root, ref, pointer)
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if isinstance(target, dict):
                node = {**target, **rest}
            elif set(rest) <= set(DOCUMENTATION):
                node = target
            else:  # a boolean schema beside other keywords: true adds nothing, false accepts nothing
                node = rest if target else {**rest, "not": {}}
        return node

    # -- nodes

    def node(self, old: Any, new: Any, pointer: str, *, top: bool = False) -> None:
        for schema in (old, new):
            if not isinstance(schema, (dict, bool)):
                raise SchemaDiffError(f"{self.file}{pointer}: {_canonical(schema)[:40]} is not a schema")
        if old is True:
            old = {}
        if new is True:
            new = {}
        if old is False or new is False:
            if old != new:
                self.add(pointer, ("old", "new") if old is False and new is False else
                         (("old",) if old is False else ("new",)),
                         "a schema that accepts nothing (false) was added or removed")
            return
        ref_old, ref_new = old.get("$ref"), new.get("$ref")
        if ref_old is not None and ref_old == ref_new:
            self.used.update({("old", ref_old), ("new", ref_new)})
            if ref_new not in self.compared_defs:
                self.compared_defs.add(ref_new)
                name = ref_new.removeprefix("#/$defs/")
                self.node(self._def(self.old_root, ref_old, pointer), self._def(self.new_root, ref_new, pointer),
                          f"#/$defs/{_escape(name)}")
            old = {k: v for k, v in old.items() if k != "$ref"}
            new = {k: v for k, v in new.items() if k != "$ref"}
        elif ref_old is not None or ref_new is not None:
            key = (id(old), id(new))
            if key in self.inline:
                return
            self.inline.add(key)
            old = self.resolve(self.old_root, old, pointer, "old")
            new = self.resolve(self.new_root, new, pointer, "new")
            if old is False or new is False:
                self.node(old, new, pointer, top=top)
                return
        self.keywords(old, new, pointer, top=top)

    def keywords(self, old: dict[str, Any], new: dict[str, Any], pointer: str, *, top: bool) -> None:
        for key in DOCUMENTATION:
            if (key in old or key in new) and _canonical(old.get(key)) != _canonical(new.get(key)):
                self.add(f"{pointer}/{_escape(key)}", (), f"documentation only: {key} changed")
        self.types(old, new, pointer)
        self.values(old, new, pointer)
        for key, (what, lower) in BOUNDS.items():
            if key in old or key in new:
                self.bound(old.get(key), new.get(key), key, what, lower, f"{pointer}/{key}")
        for key in ("format", "pattern", "multipleOf"):
            if key in old or key in new:
                self.restriction(old.get(key), new.get(key), key, f"{pointer}/{key}")
        self.objects(old, new, pointer, top=top)
        self.arrays(old, new, pointer)
        if top:
            self.store_meta(old.get("x-store-migrate"), new.get("x-store-migrate"), f"{pointer}/x-store-migrate")
        for key in sorted((set(old) | set(new)) - _UNDERSTOOD):
            if _canonical(self.deep(self.old_root, old.get(key))) != _canonical(self.deep(self.new_root, new.get(key))):
                self.add(f"{pointer}/{_escape(key)}", ("old", "new"),
                         f"{key} changed, which schema-diff does not compare keyword by keyword: review by hand")

    def deep(self, root: Any, value: Any, depth: int = 0) -> Any:
        """`value` with every `$ref` replaced by its definition (to compare what it means)."""
        if depth > 64:
            raise SchemaDiffError(f"{self.file}: references go round in a circle")
        if isinstance(value, dict):
            if "$ref" in value and isinstance(value["$ref"], str):
                return self.deep(root, self.resolve(root, value, "#", "old" if root is self.old_root else "new"),
                                 depth + 1)
            return {k: self.deep(root, v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(root, v, depth + 1) for v in value]
        return value

    def types(self, old: dict[str, Any], new: dict[str, Any], pointer: str) -> None:
        before, after = _types(old), _types(new)
        if before == after:
            return
        where = f"{pointer}/type"
        if before is None:
            self.add(where, ("new",), f"values were of any type, now only {_names(after)}: existing values of "
                                      "other types fail the new release")
            return
        if after is None:
            self.add(where, ("old",), f"values were only {_names(before)}, now of any type: the old release fails "
                                      "on the others")
            return
        added, removed = after - before, before - after
        if added == {"null"} and not removed:
            self.add(where, ("old",), "made nullable: the old release fails on null, which the new one may write")
        elif removed == {"null"} and not added:
            self.add(where, ("new",), "no longer nullable: the new release fails on existing nulls")
        elif added and removed:
            self.add(where, ("old", "new"), f"changed type ({_names(before)} -> {_names(after)}): each release fails "
                                            "on what the other writes")
        elif added:
            self.add(where, ("old",), f"type widened ({_names(before)} -> {_names(after)}): the old release fails on "
                                      f"{_names(added)}")
        else:
            self.add(where, ("new",), f"type narrowed ({_names(before)} -> {_names(after)}): the new release fails on "
                                      f"existing {_names(removed)}")

    def values(self, old: dict[str, Any], new: dict[str, Any], pointer: str) -> None:
        before, after = _values(old), _values(new)
        where = f"{pointer}/{'enum' if 'enum' in new or 'enum' in old else 'const'}"
        if before is None and after is None:
            return
        if before is None:
            self.add(where, ("new",), "values restricted to a fixed set: existing values outside it fail the new "
                                      "release")
            return
        if after is None:
            self.add(where, ("old",), "no longer restricted to a fixed set: the old release fails on other values")
            return
        old_set, new_set = {_canonical(v) for v in before}, {_canonical(v) for v in after}
        added = [v for v in after if _canonical(v) not in old_set]
        removed = [v for v in before if _canonical(v) not in new_set]
        if added:
            nullable = " (made nullable)" if None in added else ""
            self.add(where, ("old",), f"new enum value(s) {_listed(added)}{nullable}: the old release fails on "
                                      "records the new one writes with them")
        if removed:
            self.add(where, ("new",), f"enum value(s) {_listed(removed)} removed: the new release fails on "
                                      "existing records holding them")

    def bound(self, old: Any, new: Any, key: str, what: str, lower: bool, where: str) -> None:
        if _canonical(old) == _canonical(new):
            return
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in (old, new)):
            self.add(where, ("old", "new"), f"{key} is not a number: review by hand")
            return
        wider = new is None or (old is not None and (new < old if lower else new > old))
        change = f"{key} {'(none)' if old is None else old} -> {'(none)' if new is None else new}"
        if wider:
            self.add(where, ("old",), f"a wider {what} ({change}): the old release fails on values the new one "
                                      "may write")
        else:
            self.add(where, ("new",), f"a narrower {what} ({change}): the new release fails on existing values "
                                      "outside it")

    def restriction(self, old: Any, new: Any, key: str, where: str) -> None:
        if _canonical(old) == _canonical(new):
            return
        if old is None:
            self.add(where, ("new",), f"a new {key}: the new release fails on existing values that do not match it")
        elif new is None:
            self.add(where, ("old",), f"{key} removed: the old release fails on values the new one may write")
        else:
            self.add(where, ("old", "new"), f"{key} changed (one is not compared as a subset of the other): "
                                            "each release may fail on what the other writes")

    # -- objects and arrays

    def objects(self, old: dict[str, Any], new: dict[str, Any], pointer: str, *, top: bool) -> None:
        props_old, props_new = old.get("properties", {}), new.get("properties", {})
        req_old, req_new = set(old.get("required", [])), set(new.get("required", []))
        extra_old, extra_new = old.get("additionalProperties", True), new.get("additionalProperties", True)
        backfilled = top and self.store
        for name in [*props_old, *(n for n in props_new if n not in props_old)]:
            where = f"{pointer}/properties/{_escape(name)}"
            if name in props_old and name in props_new:
                if top and self.store:
                    self.counter(props_old[name], props_new[name], where)
                self.node(props_old[name], props_new[name], where)
                if name in req_new and name not in req_old and not backfilled:
                    self.add(where, ("new",), "made required: existing records without it fail the new release")
                elif name in req_old and name not in req_new:
                    self.add(where, ("old",), "no longer required: the old release fails on records the new one "
                                              "writes without it")
            elif name in props_new:
                if not _is_any(extra_old):
                    self.add(where, ("old",), "a new field where the old schema restricts other fields "
                                              "(additionalProperties): the old release fails on it")
                if backfilled:
                    self.add(where, (), "a new top-level key the backfill adds: the old release ignores it, the "
                                        "new one reads it as empty until then")
                elif name in req_new:
                    self.add(where, ("new",), "a new required field the backfill does not add: existing records "
                                              "without it fail the new release")
                elif _is_any(extra_old):
                    self.add(where, (), "a new optional field: the old release ignores it, records without it "
                                        "stay readable")
            else:
                if not _is_any(extra_new):
                    self.add(where, ("new",), "a field removed where the new schema restricts other fields "
                                              "(additionalProperties): the new release fails on existing ones")
                if top and self.store:
                    self.add(where, ("old",), "a top-level key removed: stores the new release writes lose what "
                                              "the old release keeps there")
                elif name in req_new:
                    self.add(where, ("old",), "no longer described but still required: the new release accepts "
                                              "any value there, the old one fails on other types")
                elif name in req_old:
                    self.add(where, ("old",), "a removed field that was required: the old release fails on "
                                              "records the new one writes without it")
                elif _is_any(extra_new):
                    self.add(where, (), "an optional field removed: the new release ignores it where it is "
                                        "present, the old one reads records without it")
        for name in sorted((req_new - req_old) - set(props_new)):
            self.add(f"{pointer}/required", ("new",), f"{name!r} made required: existing records without it "
                                                      "fail the new release")
        for name in sorted((req_old - req_new) - set(props_old)):
            self.add(f"{pointer}/required", ("old",), f"{name!r} no longer required: the old release fails on "
                                                      "records the new one writes without it")
        self.extra(extra_old, extra_new, f"{pointer}/additionalProperties")

    def extra(self, old: Any, new: Any, where: str) -> None:
        if _is_any(old) and _is_any(new):
            return
        if isinstance(old, dict) and isinstance(new, dict) and not _is_any(old) and not _is_any(new):
            self.node(old, new, where)
        elif _is_any(old) or (isinstance(old, dict) and new is False):
            self.add(where, ("new",), "a stricter additionalProperties: the new release fails on existing members "
                                      "the old one accepted")
        elif _is_any(new) or (old is False and isinstance(new, dict)):
            self.add(where, ("old",), "a looser additionalProperties: the old release fails on members the new one "
                                      "accepts and may write")

    def arrays(self, old: dict[str, Any], new: dict[str, Any], pointer: str) -> None:
        before, after = old.get("items", True), new.get("items", True)
        if _is_any(before) and _is_any(after):
            return
        if _is_any(before):
            self.add(f"{pointer}/items", ("new",), "items restricted: existing items of other shapes fail the new "
                                                   "release")
        elif _is_any(after):
            self.add(f"{pointer}/items", ("old",), "items no longer restricted: the old release fails on items "
                                                   "the new one may write")
        else:
            self.node(before, after, f"{pointer}/items")

    # -- what only store schemas say

    def counter(self, old: Any, new: Any, where: str) -> None:
        before = old.get("x-counter-for") if isinstance(old, dict) else None
        after = new.get("x-counter-for") if isinstance(new, dict) else None
        if before == after:
            return
        self.add(f"{where}/x-counter-for", ("old", "new"),
                 "counter guards other rows now" if before and after else
                 "a top-level key became a counter or stopped being one: each release writes it differently")

    def store_meta(self, old: Any, new: Any, where: str) -> None:
        old, new = old if isinstance(old, dict) else {}, new if isinstance(new, dict) else {}
        for key in sorted(set(old) | set(new)):
            if _canonical(old.get(key)) == _canonical(new.get(key)):
                continue
            if key == "counts":
                self.add(f"{where}/counts", (), "the manifest counts change: manifests written before and after "
                                                "are compared on the counts both have (compare reports the others)")
            else:
                self.add(f"{where}/{_escape(key)}", ("old", "new"),
                         f"x-store-migrate.{key} changed: the two tool versions would find or name this store "
                         "differently; review by hand")

    def unused_definitions(self) -> Iterator[Change]:
        """Definitions that changed but that no field of either version uses: safe."""
        olds = self.old_root.get("$defs", {}) if isinstance(self.old_root, dict) else {}
        news = self.new_root.get("$defs", {}) if isinstance(self.new_root, dict) else {}
        for name in sorted(set(olds) | set(news)):
            ref = f"#/$defs/{name}"
            if ("old", ref) in self.used or ("new", ref) in self.used or ref in self.compared_defs:
                continue
            if _canonical(olds.get(name)) != _canonical(news.get(name)):
                yield Change(self.file, f"#/$defs/{_escape(name)}", (),
                             "a definition no field uses changed, was added or was removed")


def _names(types: set[str] | None) -> str:
    shown = sorted((types or set()) - ({"integer"} if types and "number" in types else set()))
    return "/".join(shown) or "nothing"


def _listed(values: list[Any]) -> str:
    return ", ".join(_canonical(v) for v in values)


def diff_schemas(old: Any, new: Any, file: str = "schema") -> list[Change]:
    """Every change between two versions of one schema, classified (the module docstring)."""
    differ = _Differ(old, new, file)
    differ.node(old, new, "#", top=True)
    if isinstance(old, dict) and isinstance(new, dict):
        differ.changes.extend(differ.unused_definitions())
    return differ.changes
