"""The manifest (openagents.rust_store_migration.v1): entries as dataclasses, read and written.

Every manifest is checked against schemas/manifest.schema.json before anything uses it, and then
against itself (a backup named for another hash, a store listed twice). Manifests written by the
earlier implementation carry the v1 fields only and read as complete.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from . import jsonio
from .errors import ManifestInvalid, ManifestNotFound
from .stores import KIND_ORDER, load_schema

if TYPE_CHECKING:  # jsonschema is imported when a manifest is first loaded (a run may load none)
    from jsonschema import Draft202012Validator, ValidationError

SCHEMA_ID = "openagents.rust_store_migration.v1"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """The TIMESTAMP that names a run's manifest and backup directory, like 20260222T085502Z."""
    return moment.strftime("%Y%m%dT%H%M%SZ")
PENDING, COMPLETE, REVERTED = "pending", "complete", "reverted"


@dataclass(frozen=True)
class StoreEntry:
    store: str
    path: str
    existed: bool
    backup_path: str | None
    before_sha256: str | None
    after_sha256: str
    changed: bool
    counts: dict[str, int]
    validation_problems: int | None = None
    after_identity: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "store": self.store,
            "path": self.path,
            "existed": self.existed,
            "backup_path": self.backup_path,
            "before_sha256": self.before_sha256,
            "after_sha256": self.after_sha256,
            "changed": self.changed,
            "counts": self.counts,
        }
        if self.validation_problems is not None:
            fields["validation_problems"] = self.validation_problems
        if self.after_identity is not None:
            fields["after_identity"] = self.after_identity
        return fields


@dataclass
class Manifest:
    generated_at: str
    stores: list[StoreEntry]
    status: str | None = None
    """None in manifests of the earlier implementation, which are complete by construction."""
    tool_version: str | None = None
    transform_version: int | None = None
    backup_dir: str | None = None
    source: str | None = field(default=None, compare=False)
    """Where this manifest was read from (not written)."""

    @property
    def complete(self) -> bool:
        return self.status in (None, COMPLETE)

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {"schema": SCHEMA_ID, "generated_at": self.generated_at}
        for key in ("status", "tool_version", "transform_version", "backup_dir"):
            if getattr(self, key) is not None:
                document[key] = getattr(self, key)
        document["stores"] = [entry.to_json() for entry in self.stores]
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


@cache
def _schema_validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = load_schema("manifest.schema.json")
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _pointer(path: Any) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _short(error: ValidationError) -> str:
    """The schema error in one short phrase (jsonschema's own message can quote a whole entry)."""
    if len(error.message) <= 160:
        return str(error.message)
    return f"fails the schema's {error.validator!r} rule ({error.validator_value!r})"


def load(path: str) -> Manifest:
    """Read and check a manifest. Relative store and backup paths resolve against the cwd."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ManifestNotFound(path) from None
    if not stat.S_ISREG(st.st_mode):
        raise ManifestInvalid(path, "it is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        document = jsonio.decode(data)
    except jsonio.JsonError as exc:
        where = exc.position(data)
        raise ManifestInvalid(path, f"not valid JSON: {exc.reason}" + (f" at {where}" if where else "")) from None
    errors = sorted(_schema_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        detail = "; ".join(f"{_pointer(e.absolute_path)}: {_short(e)}" for e in errors[:5])
        raise ManifestInvalid(path, f"it does not match the manifest schema: {detail}")
    try:
        datetime.fromisoformat(document["generated_at"])
    except ValueError:
        raise ManifestInvalid(path, f"generated_at is not an RFC 3339 time: {document['generated_at']!r}") from None
    entries = [_entry(path, raw) for raw in document["stores"]]
    kinds = [entry.store for entry in entries]
    if len(set(kinds)) != len(kinds):
        raise ManifestInvalid(path, f"a store is listed twice: {', '.join(kinds)}")
    return Manifest(
        generated_at=document["generated_at"],
        stores=sorted(entries, key=lambda e: KIND_ORDER.index(e.store)),
        status=document.get("status"),
        tool_version=document.get("tool_version"),
        transform_version=document.get("transform_version"),
        backup_dir=document.get("backup_dir"),
        source=os.path.abspath(path),
    )


_BACKUP_NAME = re.compile(r"(?P<store>[a-z_]+)-\d{8}T\d{6}Z-(?P<sha12>[0-9a-f]{12})\.bak\.json")


def _entry(manifest_path: str, raw: dict[str, Any]) -> StoreEntry:
    entry = StoreEntry(
        store=raw["store"],
        path=os.path.abspath(raw["path"]),
        existed=raw["existed"],
        backup_path=None if raw["backup_path"] is None else os.path.abspath(raw["backup_path"]),
        before_sha256=raw["before_sha256"],
        after_sha256=raw["after_sha256"],
        changed=raw["changed"],
        counts=dict(raw["counts"]),
        validation_problems=raw.get("validation_problems"),
        after_identity=raw.get("after_identity"),
    )
    if entry.backup_path is not None and entry.before_sha256 is not None:
        name = _BACKUP_NAME.fullmatch(os.path.basename(entry.backup_path))
        if name is None or name["store"] != entry.store or name["sha12"] != entry.before_sha256[:12]:
            raise ManifestInvalid(
                manifest_path,
                f"[{entry.store}] backup_path {entry.backup_path} is not the backup of this store "
                f"with before_sha256 {entry.before_sha256[:12]}…",
            )
    if entry.existed and entry.changed != (entry.before_sha256 != entry.after_sha256):
        raise ManifestInvalid(
            manifest_path,
            f"[{entry.store}] changed is {str(entry.changed).lower()} but the before and after hashes "
            + ("differ" if entry.before_sha256 != entry.after_sha256 else "are equal"),
        )
    return entry
