"""Cutover evidence: what verify and rollback found, as a dict (for --json) and as Markdown.

The runbook asks, before each cutover, for the manifest and its retention, checksum parity for
every store, a count snapshot for sign-off and a rollback drill's output. These functions only
shape results the commands already produced; they read and write nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from store_migrate import __version__
from store_migrate.commands import compare
from store_migrate.commands.rollback import RollbackResult
from store_migrate.commands.verify import VerifyResult
from store_migrate.core.manifest import Manifest


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
            "additive": None if check.additive is None else check.additive.to_json(),
        })
    return {
        **_header("verify", result.manifest, manifest_path),
        "strict": result.strict,
        "allow_unreadable": result.allow_unreadable,
        "additive_checked": result.additive,
        "passed": result.ok,
        "manifest_problems": result.problems,
        "stores": stores,
        "baseline": None if result.comparison is None else compare.to_json(result.comparison),
    }


def _additive_cell(proof: dict[str, Any] | None) -> str:
    if proof is None:
        return "not checked"
    if proof["ok"]:
        return "yes"
    return "NO (not proven)" if proof["reason"] else f"NO ({proof['differences']} differences)"


def _additive_row(evidence: dict[str, Any]) -> str:
    """The report's "additive" line: did every store keep all its backup held?"""
    if not evidence["additive_checked"]:
        return "- additive (nothing lost or changed): not checked (`verify --additive` checks it)"
    failed = [s["store"] for s in evidence["stores"] if s["additive"] is not None and not s["additive"]["ok"]]
    unchecked = [s["store"] for s in evidence["stores"] if s["additive"] is None]
    verdict = f"NO: {', '.join(failed)}" if failed else "yes, every store holds all its backup held"
    return f"- additive (nothing lost or changed): {verdict}" + (
        f" (not checked: {', '.join(unchecked)})" if unchecked else "")


def _baseline(lines: list[str], baseline: dict[str, Any]) -> None:
    """The comparison with a baseline manifest (`verify --baseline`), as compare prints it."""
    a, b = baseline["a"], baseline["b"]
    lines += ["", f"## Comparison with the baseline: {'PASSED' if baseline['passed'] else 'FAILED'}", "",
              f"- baseline (A): `{a['path']}` (generated {a['generated_at']}, {a['status']}, "
              f"tool {a['tool_version'] or '-'}, transform {a['transform_version'] or '-'})",
              f"- this manifest (B): `{b['path']}` (generated {b['generated_at']}, {b['status']}, "
              f"tool {b['tool_version'] or '-'}, transform {b['transform_version'] or '-'})",
              f"- a count may drop by at most {baseline['max_drop']} (--max-drop)",
              "", "| store | count | baseline | this manifest | difference |", "| --- | --- | ---: | ---: | ---: |"]
    for s in baseline["stores"]:
        for c in s["counts"]:
            shown = ["-" if c[k] is None else str(c[k]) for k in ("a", "b")]
            difference = "" if c["difference"] is None else f"{c['difference']:+d}" if c["difference"] else "0"
            lines.append(f"| {s['store']} | {c['name']} | {shown[0]} | {shown[1]} | {difference} |")
    lines += ["", "| store | existed | changed | after sha256 (baseline) | after sha256 (this) | unreadable |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in baseline["stores"]:
        sides = [s["a"], s["b"]]
        cell = [("-" if e is None else ("yes" if e[k] else "no")) for k in ("existed", "changed") for e in sides]
        sha = ["-" if e is None else f"`{e['after_sha256'][:12]}`" for e in sides]
        unread = ["-" if e is None or e["validation_problems"] is None else str(e["validation_problems"])
                  for e in sides]
        lines.append(f"| {s['store']} | {cell[0]} / {cell[1]} | {cell[2]} / {cell[3]} | {sha[0]} | {sha[1]} | "
                     f"{unread[0]} / {unread[1]} |")
    if baseline["findings"]:
        lines += [""] + [f"- {'' if f['store'] is None else f['store'] + ': '}{f['message']}"
                         for f in baseline["findings"]]


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


def rollback_failure_evidence(manifest_path: str, message: str, hint: str | None, *, refused: bool) -> dict[str, Any]:
    """A rollback that was refused (it checked first and changed nothing) or failed: the reasons
    are the lines of its error message, as printed on stderr."""
    headline, *details = message.splitlines()
    return {
        "kind": "rollback",
        "tool_version": __version__,
        "written_at": _now(),
        "manifest": {"path": manifest_path, "generated_at": None, "status": None},
        "passed": False,
        "outcome": "refused" if refused else "failed",
        "error": headline,
        "reasons": [line.strip() for line in details if line.strip()],
        "next": hint,
        "stores": [],
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
    if evidence.get("outcome") == "refused":
        verdict = "REFUSED"
    manifest = evidence["manifest"]
    read = f" (generated {manifest['generated_at']}, {manifest['status']})" if manifest["generated_at"] else ""
    lines = [
        f"# {title}: {verdict}", "",
        f"- tool: store-migrate {evidence['tool_version']}",
        f"- written: {evidence['written_at']}",
        f"- manifest: `{manifest['path']}`{read}",
        "- retention: keep this manifest and its backup directory for the whole canary window",
    ]
    if "outcome" in evidence:  # a rollback that did not happen, or did not finish
        refused = evidence["outcome"] == "refused"
        lines += ["", "## Refused: nothing was changed" if refused else "## Failed", ""]
        shown = evidence["reasons"] if refused and evidence["reasons"] else [evidence["error"], *evidence["reasons"]]
        lines += [f"- {reason}" for reason in shown]
        lines += [f"- next: {evidence['next']}"] if evidence["next"] else []
    elif evidence["kind"] == "verify":
        lines.append(f"- strict validation: {'yes' if evidence['strict'] else 'no (the run recorded verdicts)'}")
        lines.append(f"- records the service cannot read: {'allowed' if evidence['allow_unreadable'] else 'fail'}")
        lines.append(_additive_row(evidence))
        lines += [f"- manifest problem: {p}" for p in evidence["manifest_problems"]]
        lines += ["", "| store | path | checksum parity | backup intact | service can read | additive | verdict |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in evidence["stores"]:
            readable = {True: "yes", False: f"no ({s['unreadable_records']} records)", None: "unknown"}
            lines.append(
                f"| {s['store']} | `{s['path']}` | {'yes' if s['checksum']['parity'] else 'NO'} | "
                f"{ {True: 'yes', False: 'NO', None: 'n/a (no file before)'}[s['backup']['intact']] } | "
                f"{readable[s['service_can_read']]} | {_additive_cell(s['additive'])} | "
                f"{'ok' if s['ok'] else 'FAILED'} |"
            )
        lines += ["", "## Counts", "", "| store | count | value |", "| --- | --- | ---: |"]
        for s in evidence["stores"]:
            lines += [f"| {s['store']} | {name} | {value} |" for name, value in s["counts"].items()]
        lines += ["", "## Checksums", ""]
        for s in evidence["stores"]:
            lines.append(f"- {s['store']}: expected `{s['checksum']['expected']}`, actual `{s['checksum']['actual']}`")
        details = [s for s in evidence["stores"] if s["problems"] or s["validation_warnings"]
                   or (s["additive"] is not None and not s["additive"]["ok"])]
        if details:
            lines += ["", "## Problems and warnings", ""]
            for s in details:
                lines += [f"- {s['store']}: {p.splitlines()[0]}" for p in s["problems"]]
                lines += [f"- {s['store']} (service): `{w['pointer']}` {w['message']}"
                          for w in s["validation_warnings"]]
                proof = s["additive"]
                if proof is not None and not proof["ok"]:
                    lines += [f"- {s['store']} (additive): {proof['reason']}"] if proof["reason"] else []
                    lines += [f"- {s['store']} (additive): `{d['pointer']}` {d['message']}" for d in proof["first"]]
        if evidence["baseline"] is not None:
            _baseline(lines, evidence["baseline"])
    else:
        lines += ["", "| store | path | action | detail |", "| --- | --- | --- | --- |"]
        for s in evidence["stores"]:
            detail = s["reason"] or (f"restored sha256 `{s['restored_sha256']}`" if s["restored_sha256"] else "")
            if s["kept_newer_file_as"]:
                detail += f"; newer file kept as `{s['kept_newer_file_as']}`"
            lines.append(f"| {s['store']} | `{s['path']}` | {s['action']} | {detail} |")
    _sign_off(lines)
    return "\n".join(lines) + "\n"
