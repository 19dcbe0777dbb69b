"""The manifest (openagents.rust_store_migration.v1): entries as dataclasses, read and written.

Every manifest is checked against schemas/manifest.schema.json before anything uses it, and then
against itself (a backup named for another hash, a store listed twice). Manifests written by the
earlier implementation carry the v1 fields only and read as complete.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import structlog

from store_migrate.core import workdir
from store_migrate.core.stores import KIND_ORDER, load_schema
from store_migrate.errors import ManifestInvalid, ManifestNotFound, StoreMigrateError, located
from store_migrate.fs import ondisk
from store_migrate.readable import jsonio

if TYPE_CHECKING:  # jsonschema is imported when a manifest is first loaded (a run may load none)
    from jsonschema import Draft202012Validator, ValidationError

log = structlog.get_logger("store_migrate")
SCHEMA_ID = "openagents.rust_store_migration.v1"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    resolved_path: str | None = None
    """Where `path` led when the run read it (every symbolic link resolved): verify and rollback
    refuse when it now leads elsewhere. Absent in manifests of earlier versions."""

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
        if self.resolved_path is not None:
            fields["resolved_path"] = self.resolved_path
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


def each_in(
    directory: str, *, newest_first: bool = False, after: str | None = None
) -> Iterator[tuple[str, Manifest]]:
    """Every readable manifest in a work directory's `manifests/` named as runs name them, with
    its path, oldest first (or newest first); only those whose file name sorts after `after`,
    when given (the others are not even read). One that cannot be read is logged and passed
    over: it cannot describe a run of ours."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory), reverse=newest_first):
        if not workdir.MANIFEST_NAME.fullmatch(name) or (after is not None and name <= after):
            continue
        path = os.path.join(directory, name)
        try:
            yield path, load(path)
        except StoreMigrateError as exc:
            log.warning("manifest.skipped", path=path, reason=exc.message)


def _read(path: str, *, changes: bool) -> bytes:
    """The manifest's bytes, read from the very file whose owner and mode were checked. For a
    command that `changes` stores (rollback), the file may not be a link and its directory must be
    trusted too (workdir.py)."""
    ondisk.require_printable(path, "manifest path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if changes else 0))
    except FileNotFoundError:
        raise ManifestNotFound(path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestInvalid(path, "it is a symbolic link; give rollback the manifest file itself") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # checked before fdopen, which refuses a directory on its own
            raise ManifestInvalid(path, "it is not a regular file")
        workdir.require_trusted_file(path, st)
        if changes:
            workdir.require_trusted_parent(path)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def load(path: str, *, changes: bool = False, in_place: bool = True) -> Manifest:
    """Read and check a manifest: who could have written it (see `_read`), its schema, and that it
    describes only what a run makes (see `_entry`; `in_place` false for a manifest read for its
    counts only, such as a baseline copied from staging, whose backups are not used). Relative
    store and backup paths, which only the earlier implementation wrote, resolve against the cwd."""
    data = _read(path, changes=changes)
    try:
        document = jsonio.decode(data)
    except jsonio.JsonError as exc:
        raise ManifestInvalid(path, f"not valid JSON: {located(exc.reason, exc.position(data))}") from None
    errors = sorted(_schema_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        detail = "; ".join(f"{_pointer(e.absolute_path)}: {_short(e)}" for e in errors[:5])
        raise ManifestInvalid(path, f"it does not match the manifest schema: {detail}")
    try:
        datetime.fromisoformat(document["generated_at"])
    except ValueError:
        raise ManifestInvalid(path, "generated_at is not an RFC 3339 time") from None
    ours = "status" in document or "tool_version" in document
    entries = [_entry(path, raw, ours, in_place) for raw in document["stores"]]
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
    )


def _checked_path(manifest_path: str, store: str, field_name: str, raw: str, relative_ok: bool) -> str:
    """An absolute, normalised, printable path from a manifest (relative ones of the earlier
    implementation resolve against the cwd)."""
    if ondisk.unsafe_text(raw):
        raise ManifestInvalid(manifest_path, f"[{store}] {field_name} holds a control character")
    if not os.path.isabs(raw) and not relative_ok:
        raise ManifestInvalid(manifest_path, f"[{store}] {field_name} {raw} is not an absolute path")
    if ".." in raw.split("/") or (os.path.isabs(raw) and os.path.normpath(raw) != raw):
        raise ManifestInvalid(manifest_path, f"[{store}] {field_name} {raw} is not a normalised path")
    return os.path.abspath(raw)


def _entry(manifest_path: str, raw: dict[str, Any], ours: bool, in_place: bool) -> StoreEntry:
    store = raw["store"]
    resolved = raw.get("resolved_path")
    entry = StoreEntry(
        store=store,
        path=_checked_path(manifest_path, store, "path", raw["path"], not ours),
        existed=raw["existed"],
        backup_path=None if raw["backup_path"] is None else _checked_path(
            manifest_path, store, "backup_path", raw["backup_path"], not ours),
        before_sha256=raw["before_sha256"],
        after_sha256=raw["after_sha256"],
        changed=raw["changed"],
        counts=dict(raw["counts"]),
        validation_problems=raw.get("validation_problems"),
        after_identity=raw.get("after_identity"),
        resolved_path=None if resolved is None else _checked_path(
            manifest_path, store, "resolved_path", resolved, False),
    )
    if entry.backup_path is not None and entry.before_sha256 is not None:
        _check_backup_path(manifest_path, entry.store, entry.backup_path, entry.before_sha256, in_place)
    if entry.existed and entry.changed != (entry.before_sha256 != entry.after_sha256):
        raise ManifestInvalid(
            manifest_path,
            f"[{entry.store}] changed is {str(entry.changed).lower()} but the before and after hashes "
            + ("differ" if entry.before_sha256 != entry.after_sha256 else "are equal"),
        )
    return entry


def _check_backup_path(manifest_path: str, store: str, backup_path: str, before_sha256: str, in_place: bool) -> None:
    """The backup is named as a run names this store's backup of these bytes and, `in_place`,
    sits in this manifest's own backup directory under its run's TIMESTAMP."""
    work, run_stamp = workdir.WorkDir.of_manifest(manifest_path)
    name = workdir.BACKUP_NAME.fullmatch(os.path.basename(backup_path))
    if name is None or name["store"] != store or name["sha12"] != before_sha256[:12]:
        raise ManifestInvalid(
            manifest_path,
            f"[{store}] backup_path {backup_path} is not the backup of this store "
            f"with before_sha256 {before_sha256[:12]}…",
        )
    elsewhere = os.path.dirname(backup_path) != work.backup_dir(run_stamp) or name["stamp"] != run_stamp
    if in_place and elsewhere:
        raise ManifestInvalid(
            manifest_path,
            f"[{store}] backup_path {backup_path} is not in this manifest's own backup directory "
            f"{work.backup_dir(run_stamp)} under the name the run gives it; "
            "a manifest must stay in $WORK_DIR/manifests beside its run's backups",
        )


def covered_paths(record: Manifest) -> set[str]:
    """Every path a manifest's stores go by: the store paths and where they led (resolved_path)."""
    return {e.path for e in record.stores} | {e.resolved_path for e in record.stores if e.resolved_path}
