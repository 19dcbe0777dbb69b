"""Two manifests side by side: the runbook's "compare manifests before retrying production" and
its "unexpected data drops".

`A` is the reference (a staging run, or the first run) and `B` the run being judged (production,
or a rerun). For every store either manifest covers: whether it existed, whether it changed, its
before and after hashes, every count of both with the difference, the records the service could
not read, and the tool and transform versions and times of both manifests.

B fails against A (exit 1) when a count of B is below A's by more than `max_drop`, when a store
or a count A records is missing from B (nothing to compare it with), when B records more records
the service cannot read than A, or when either manifest is not complete. `verify --baseline`
makes the same comparison with its manifest as B.

Manifests are read for their contents only (`manifest.load(..., in_place=False)`): a manifest
copied from another environment is compared, its backups are never used. Nothing here prints;
nothing quotes a store's contents (a manifest holds paths, hashes and counts only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from store_migrate.core import manifest
from store_migrate.core.manifest import REVERTED, Manifest, StoreEntry
from store_migrate.core.stores import KIND_ORDER

log = structlog.get_logger("store_migrate")

FindingKind = Literal["incomplete", "store_missing", "count_missing", "count_dropped", "unreadable"]
Side = Literal["a", "b"]


@dataclass(frozen=True)
class Finding:
    """Why B fails against A: `store` is None for a finding about a whole manifest."""

    kind: FindingKind
    store: str | None
    message: str
    side: Side = "b"
    """Which manifest the finding is about (only "incomplete" can be about A)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "store": self.store, "manifest": self.side, "message": self.message}


@dataclass(frozen=True)
class CountRow:
    name: str
    a: int | None
    b: int | None

    @property
    def difference(self) -> int | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "a": self.a, "b": self.b, "difference": self.difference}


@dataclass(frozen=True)
class StoreRow:
    store: str
    a: StoreEntry | None
    b: StoreEntry | None
    counts: list[CountRow]


@dataclass
class Comparison:
    a: Manifest
    b: Manifest
    a_path: str
    b_path: str
    max_drop: int
    stores: list[StoreRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def load(path: str) -> Manifest:
    """A manifest read for its contents only, as a baseline is (see the module docstring)."""
    return manifest.load(path, in_place=False)


def compare_files(a_path: str, b_path: str, *, max_drop: int = 0) -> Comparison:
    """Read both manifests (for their contents only) and compare them."""
    return compare(load(a_path), load(b_path), a_path, b_path, max_drop=max_drop)


def compare(a: Manifest, b: Manifest, a_path: str, b_path: str, *, max_drop: int = 0) -> Comparison:
    """Judge manifest B against manifest A (the module docstring says how)."""
    result = Comparison(a, b, a_path, b_path, max_drop)
    sides: tuple[tuple[Side, Manifest, str], ...] = (("a", a, a_path), ("b", b, b_path))
    for side, record, path in sides:
        if not record.complete:
            result.findings.append(Finding(
                "incomplete", None,
                f"manifest {path} is {record.status}: the run that wrote it did not complete"
                + (" and put every store back" if record.status == REVERTED else ""),
                side,
            ))
    in_a = {e.store: e for e in a.stores}
    in_b = {e.store: e for e in b.stores}
    for store in (k for k in KIND_ORDER if k in in_a or k in in_b):
        old, new = in_a.get(store), in_b.get(store)
        names = list(old.counts) if old is not None else []
        names += [n for n in (new.counts if new is not None else {}) if n not in names]
        rows = [CountRow(n, None if old is None else old.counts.get(n), None if new is None else new.counts.get(n))
                for n in names]
        result.stores.append(StoreRow(store, old, new, rows))
        result.findings.extend(_judge(store, old, new, rows, a_path, max_drop))
    log.info(
        "manifests.compared", a=a_path, b=b_path, max_drop=max_drop, ok=result.ok,
        findings=[f"{'' if f.store is None else f'[{f.store}] '}{f.message}" for f in result.findings],
    )
    return result


def _judge(
    store: str, old: StoreEntry | None, new: StoreEntry | None, rows: list[CountRow], a_path: str, max_drop: int
) -> list[Finding]:
    if old is None:
        return []
    if new is None:
        return [Finding("store_missing", store, f"is in baseline {a_path} but not in this manifest: "
                                                "its counts cannot be compared")]
    findings = []
    for row in rows:
        if row.a is None:
            continue
        if row.b is None:
            findings.append(Finding("count_missing", store, f"count {row.name} is in baseline {a_path} but not in "
                                                            "this manifest: it cannot be compared"))
        elif row.a - row.b > max_drop:
            findings.append(Finding("count_dropped", store, f"count {row.name} dropped by {row.a - row.b} against "
                                                            f"baseline {a_path} ({row.a} -> {row.b}; "
                                                            f"--max-drop {max_drop})"))
    unread_a, unread_b = old.validation_problems or 0, new.validation_problems or 0
    if unread_b > unread_a:
        findings.append(Finding("unreadable", store, f"records {unread_b} record(s) the service cannot read, "
                                                     f"against {unread_a} in baseline {a_path}"))
    return findings


# ------------------------------------------------------------------------------ as data


def _entry_json(entry: StoreEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"path": entry.path, "existed": entry.existed, "changed": entry.changed,
            "before_sha256": entry.before_sha256, "after_sha256": entry.after_sha256,
            "validation_problems": entry.validation_problems}


def manifest_json(record: Manifest, path: str) -> dict[str, Any]:
    return {"path": path, "generated_at": record.generated_at,
            "status": record.status or "complete (earlier implementation)",
            "tool_version": record.tool_version, "transform_version": record.transform_version}


def to_json(result: Comparison) -> dict[str, Any]:
    """The comparison for `compare --json`, `verify --json` and the reports."""
    return {
        "a": manifest_json(result.a, result.a_path),
        "b": manifest_json(result.b, result.b_path),
        "max_drop": result.max_drop,
        "passed": result.ok,
        "stores": [
            {"store": row.store, "a": _entry_json(row.a), "b": _entry_json(row.b),
             "counts": [c.to_json() for c in row.counts]}
            for row in result.stores
        ],
        "findings": [f.to_json() for f in result.findings],
    }


# ------------------------------------------------------------------------------ as text


def _yes(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _short(digest: str | None) -> str:
    return "-" if digest is None else digest[:12]


def _versions(record: Manifest) -> str:
    if record.status is None and record.tool_version is None:
        return "earlier implementation"
    return f"tool {record.tool_version or '-'}, transform {record.transform_version or '-'}"


def _fields(entry: StoreEntry | None) -> dict[str, str]:
    names = ("existed", "changed", "before_sha256", "after_sha256", "unreadable records")
    if entry is None:
        return dict.fromkeys(names, "(not in it)")
    unreadable = "-" if entry.validation_problems is None else str(entry.validation_problems)
    return dict(zip(names, (_yes(entry.existed), _yes(entry.changed), _short(entry.before_sha256),
                            _short(entry.after_sha256), unreadable), strict=True))


def text(result: Comparison) -> list[str]:
    """The comparison side by side, for a terminal: the manifests, then one table per store
    (hashes cut to their first 12 hex digits, as backup names do)."""
    lines = []
    for label, record, path in (("A", result.a, result.a_path), ("B", result.b, result.b_path)):
        lines.append(f"{label}: {path} (generated {record.generated_at}, "
                     f"{record.status or 'complete'}, {_versions(record)})")
    for row in result.stores:
        cells = [["", "A", "B", "B - A"]]
        sides = [_fields(row.a), _fields(row.b)]
        for name in sides[0]:
            cells.append([f"  {name}", sides[0][name], sides[1][name], ""])
        for count in row.counts:
            difference = count.difference
            cells.append([f"  {count.name}", "-" if count.a is None else str(count.a),
                          "-" if count.b is None else str(count.b),
                          "" if difference is None else f"{difference:+d}" if difference else "0"])
        widths = [max(len(r[i]) for r in cells) for i in range(4)]
        lines.append("")
        paths = {e.path for e in (row.a, row.b) if e is not None}
        if len(paths) == 1:
            lines.append(f"[{row.store}] {paths.pop()}")
        else:
            lines.append(f"[{row.store}] A: {'-' if row.a is None else row.a.path}, "
                         f"B: {'-' if row.b is None else row.b.path}")
        lines += ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                  .rstrip() for r in cells]
    return lines
