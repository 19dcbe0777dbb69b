"""Cutover evidence: what verify and rollback found, as a dict (for --json) and as Markdown.

The runbook asks, before each cutover, for the manifest and its retention, checksum parity for
every store, a count snapshot for sign-off and a rollback drill's output. These functions only
shape results the commands already produced; they read and write nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import __version__
from .commands import RollbackResult, VerifyResult
from .manifest import Manifest


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _header(kind: str, record: Manifest, manifest_path: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "tool_version": __version__,
        "written_at": _now(),
        "manifest": {"path": manifest_path, "generated_at": record.generated_at,
                     "status": record.status or "complete (earlier implementation)"},
    }


def verify_evidence(result: VerifyResult, manifest_path: str) -> dict[str, Any]:
    stores = []
    for entry, check in zip(result.manifest.stores, result.stores, strict=True):
        report = check.report
        stores.append({
            "store": entry.store,
            "path": entry.path,
            "ok": not check.failed(),
            "checksum": {
                "expected": entry.after_sha256,
                "actual": check.live_sha256,
                "parity": check.live_sha256 == entry.after_sha256,
            },
            "counts": entry.counts,
            "backup": {"path": entry.backup_path, "intact": check.backup_ok},
            "service_can_read": None if report is None else report.readable,
            "unreadable_records": None if report is None else report.unreadable,
            "validation_warnings": [] if report is None else [p.to_json() for p in report.problems],
            "problems": check.problems,
        })
    return {
        **_header("verify", result.manifest, manifest_path),
        "strict": result.strict,
        "allow_unreadable": result.allow_unreadable,
        "passed": result.ok,
        "manifest_problems": result.problems,
        "stores": stores,
    }


def rollback_evidence(result: RollbackResult, manifest_path: str) -> dict[str, Any]:
    return {
        **_header("rollback", result.manifest, manifest_path),
        "passed": True,
        "stores": [
            {"store": a.store, "path": a.path, "action": a.action, "reason": a.reason or None,
             "restored_sha256": None if a.backup is None or a.action != "restored" else a.backup.sha256,
             "kept_newer_file_as": a.kept_as}
            for a in result.actions
        ],
    }


def _sign_off(lines: list[str]) -> None:
    lines += ["", "## Sign-off", "", "| role | name | date | decision |", "| --- | --- | --- | --- |",
              "| operator | | | |", "| reviewer | | | |"]


def markdown(evidence: dict[str, Any]) -> str:
    """The evidence as a Markdown document for the change record."""
    title = "Store backfill verification" if evidence["kind"] == "verify" else "Store rollback drill"
    verdict = "PASSED" if evidence["passed"] else "FAILED"
    if evidence["passed"] and any(s.get("service_can_read") is False for s in evidence["stores"]):
        verdict = "ACCEPTED WITH UNREADABLE RECORDS (--allow-unreadable)"  # never PASSED
    manifest = evidence["manifest"]
    lines = [
        f"# {title}: {verdict}", "",
        f"- tool: store-migrate {evidence['tool_version']}",
        f"- written: {evidence['written_at']}",
        f"- manifest: `{manifest['path']}` (generated {manifest['generated_at']}, {manifest['status']})",
        "- retention: keep this manifest and its backup directory for the whole canary window",
    ]
    if evidence["kind"] == "verify":
        lines.append(f"- strict validation: {'yes' if evidence['strict'] else 'no (the run recorded verdicts)'}")
        lines.append(f"- records the service cannot read: {'allowed' if evidence['allow_unreadable'] else 'fail'}")
        lines += [f"- manifest problem: {p}" for p in evidence["manifest_problems"]]
        lines += ["", "| store | path | checksum parity | backup intact | service can read | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for s in evidence["stores"]:
            readable = {True: "yes", False: f"no ({s['unreadable_records']} records)", None: "unknown"}
            lines.append(
                f"| {s['store']} | `{s['path']}` | {'yes' if s['checksum']['parity'] else 'NO'} | "
                f"{ {True: 'yes', False: 'NO', None: 'n/a (no file before)'}[s['backup']['intact']] } | "
                f"{readable[s['service_can_read']]} | {'ok' if s['ok'] else 'FAILED'} |"
            )
        lines += ["", "## Counts", "", "| store | count | value |", "| --- | --- | ---: |"]
        for s in evidence["stores"]:
            lines += [f"| {s['store']} | {name} | {value} |" for name, value in s["counts"].items()]
        lines += ["", "## Checksums", ""]
        for s in evidence["stores"]:
            lines.append(f"- {s['store']}: expected `{s['checksum']['expected']}`, actual `{s['checksum']['actual']}`")
        details = [s for s in evidence["stores"] if s["problems"] or s["validation_warnings"]]
        if details:
            lines += ["", "## Problems and warnings", ""]
            for s in details:
                lines += [f"- {s['store']}: {p.splitlines()[0]}" for p in s["problems"]]
                lines += [f"- {s['store']} (service): `{w['pointer']}` {w['message']}"
                          for w in s["validation_warnings"]]
    else:
        lines += ["", "| store | path | action | detail |", "| --- | --- | --- | --- |"]
        for s in evidence["stores"]:
            detail = s["reason"] or (f"restored sha256 `{s['restored_sha256']}`" if s["restored_sha256"] else "")
            if s["kept_newer_file_as"]:
                detail += f"; newer file kept as `{s['kept_newer_file_as']}`"
            lines.append(f"| {s['store']} | `{s['path']}` | {s['action']} | {detail} |")
    _sign_off(lines)
    return "\n".join(lines) + "\n"
