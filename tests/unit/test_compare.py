"""compare A B (and verify --baseline, which makes the same comparison): side by side, and a
verdict a pipeline can enforce before retrying production."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import RUN, VERIFY, Stores, load_json, log_events


@pytest.fixture
def migrated(stores: Stores) -> Path:
    stores.write_samples()
    stores.call(RUN, check=0)
    return stores.newest_manifest()


def _copy(source: Path, target: Path, edit: Any = None) -> Path:
    """A copy of a manifest elsewhere (a staging manifest brought over), edited by `edit`."""
    document = load_json(source)
    if edit is not None:
        edit(document)
    target.write_text(json.dumps(document, indent=2))
    os.chmod(target, 0o600)
    return target


def _domain(document: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in document["stores"] if e["store"] == "domain")


def test_a_manifest_against_itself_passes_side_by_side(stores: Stores, migrated: Path) -> None:
    done = stores.call("store-migrate", "compare", str(migrated), str(migrated), check=0)
    lines = done.stdout.splitlines()
    document = load_json(migrated)
    assert lines[0] == f"A: {migrated} (generated {document['generated_at']}, complete, tool 0.1.0, transform {document['transform_version']})"
    assert lines[1].startswith(f"B: {migrated} ")
    assert f"[domain] {stores.paths['domain']}" in lines
    domain = _domain(document)
    assert any(line.split() == ["after_sha256", domain["after_sha256"][:12], domain["after_sha256"][:12]]
               for line in lines)
    assert any(line.split() == ["shouts", "2", "2", "0"] for line in lines)
    assert any(line.split() == ["unreadable", "records", "0", "0"] for line in lines)
    assert lines[-1] == f"compare passed: {migrated} holds every count of {migrated} (--max-drop 0)"
    assert "error" not in done.stderr
    event = next(e for e in log_events(done.stderr) if e["event"] == "manifests.compared")
    assert event["ok"] is True and event["findings"] == []


def test_a_drop_beyond_max_drop_fails(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    staging = _copy(migrated, tmp_path / "staging.json", lambda d: _domain(d)["counts"].update(shouts=7, whispers=1))
    done = stores.call("store-migrate", "compare", str(staging), str(migrated), check=1)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: [domain] count shouts dropped by 5 against baseline {staging} (7 -> 2; --max-drop 0)",
        f"error: [domain] count whispers dropped by 1 against baseline {staging} (1 -> 0; --max-drop 0)",
        f"error: compare failed: 2 finding(s) for {migrated} against {staging}",
    ]
    assert any(line.split() == ["shouts", "7", "2", "-5"] for line in done.stdout.splitlines())
    assert "compare passed" not in done.stdout
    done = stores.call("store-migrate", "compare", "--max-drop", "4", str(staging), str(migrated), check=1)
    assert "whispers" not in done.stderr and "shouts dropped by 5" in done.stderr
    stores.call("store-migrate", "compare", "--max-drop", "5", str(staging), str(migrated), check=0)
    # the other way round, B has more than A: a growth is no drop
    stores.call("store-migrate", "compare", str(migrated), str(staging), check=0)


def test_more_unreadable_records_missing_stores_and_counts_fail(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    def unreadable(d: dict[str, Any]) -> None:
        d["stores"][1]["validation_problems"] = 3

    worse = _copy(migrated, tmp_path / "worse.json", unreadable)
    done = stores.call("store-migrate", "compare", str(migrated), str(worse), check=1)
    assert (f"error: [codex_threads] records 3 record(s) the service cannot read, against 0 in baseline {migrated}"
            in done.stderr.splitlines())
    stores.call("store-migrate", "compare", str(worse), str(migrated), check=0)  # fewer is fine

    def without_domain(d: dict[str, Any]) -> None:
        d["stores"] = d["stores"][:2]
        del d["stores"][0]["counts"]["sessions"]

    partial = _copy(migrated, tmp_path / "partial.json", without_domain)
    done = stores.call("store-migrate", "compare", str(migrated), str(partial), check=1)
    errors = done.stderr.splitlines()
    assert (f"error: [auth] count sessions is in baseline {migrated} but not in this manifest: it cannot be compared"
            in errors)
    assert f"error: [domain] is in baseline {migrated} but not in this manifest: its counts cannot be compared" in errors
    assert any(line.split()[:3] == ["existed", "yes", "(not"] for line in done.stdout.splitlines())


def test_a_manifest_that_is_not_complete_fails(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    pending = _copy(migrated, tmp_path / "pending.json", lambda d: d.update(status="pending"))
    reverted = _copy(migrated, tmp_path / "reverted.json", lambda d: d.update(status="reverted"))
    done = stores.call("store-migrate", "compare", str(pending), str(migrated), check=1)
    assert f"error: manifest {pending} is pending: the run that wrote it did not complete" in done.stderr
    done = stores.call("store-migrate", "compare", str(migrated), str(reverted), check=1)
    assert (f"error: manifest {reverted} is reverted: the run that wrote it did not complete and put every store "
            "back") in done.stderr


def test_json_for_pipelines(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    def earlier(d: dict[str, Any]) -> None:  # the v1 fields only, as the earlier implementation wrote them
        for key in ("status", "tool_version", "transform_version", "backup_dir"):
            d.pop(key, None)
        for entry in d["stores"]:
            for key in ("validation_problems", "after_identity", "resolved_path"):
                entry.pop(key, None)
        _domain(d)["counts"]["shouts"] = 3

    old = _copy(migrated, tmp_path / "earlier.json", earlier)
    done = stores.call("store-migrate", "compare", "--json", str(old), str(migrated), check=1)
    document = json.loads(done.stdout)
    assert document["kind"] == "compare" and document["passed"] is False and document["max_drop"] == 0
    assert document["a"] == {"path": str(old), "generated_at": load_json(old)["generated_at"],
                             "status": "complete (earlier implementation)", "tool_version": None,
                             "transform_version": None}
    assert document["b"]["status"] == "complete" and document["b"]["tool_version"] == "0.1.0"
    assert [s["store"] for s in document["stores"]] == ["auth", "codex_threads", "domain"]
    domain = document["stores"][2]
    assert domain["a"]["after_sha256"] == _domain(load_json(migrated))["after_sha256"]  # in full
    assert domain["a"]["validation_problems"] is None and domain["b"]["validation_problems"] == 0
    assert {"name": "shouts", "a": 3, "b": 2, "difference": -1} in domain["counts"]
    assert document["findings"] == [{
        "kind": "count_dropped", "store": "domain", "manifest": "b",
        "message": f"count shouts dropped by 1 against baseline {old} (3 -> 2; --max-drop 0)"}]
    text = stores.call("store-migrate", "compare", str(old), str(migrated), check=1).stdout
    assert text.splitlines()[0].endswith("complete, earlier implementation)")


def test_manifests_others_could_write_are_refused(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    loose = _copy(migrated, tmp_path / "loose.json")
    os.chmod(loose, 0o622)
    done = stores.call("store-migrate", "compare", str(loose), str(migrated), check=1)
    assert f"error: refusing to use manifest {loose} is writable by group and others" in done.stderr
    done = stores.call("store-migrate", "compare", str(migrated), "/nowhere.json", check=1)
    assert "error: manifest not found: /nowhere.json" in done.stderr
    stores.call("store-migrate", "compare", str(migrated), check=2)


def test_verify_baseline_is_the_same_comparison_and_goes_into_the_report(
    stores: Stores, migrated: Path, tmp_path: Path
) -> None:
    pending = _copy(migrated, tmp_path / "pending.json", lambda d: d.update(status="pending"))
    done = stores.call(VERIFY, str(migrated), "--baseline", str(pending), check=1)
    assert f"error: manifest {pending} is pending: the run that wrote it did not complete" in done.stderr

    def staging(d: dict[str, Any]) -> None:
        _domain(d)["counts"]["shouts"] = 7
        d["stores"][1]["validation_problems"] = 0

    baseline = _copy(migrated, tmp_path / "staging.json", staging)
    report = tmp_path / "evidence.md"
    done = stores.call(VERIFY, str(migrated), "--baseline", str(baseline), "--report", str(report), check=1)
    assert f"error: [domain] count shouts dropped by 5 against baseline {baseline} (7 -> 2; --max-drop 0)" in done.stderr
    text = report.read_text()
    assert "## Comparison with the baseline: FAILED" in text
    assert f"- baseline (A): `{baseline}`" in text and f"- this manifest (B): `{migrated}`" in text
    assert "| domain | shouts | 7 | 2 | -5 |" in text and "| auth | users | 2 | 2 | 0 |" in text
    assert f"- domain: count shouts dropped by 5 against baseline {baseline} (7 -> 2; --max-drop 0)" in text
    as_json = json.loads(stores.call("store-migrate", "verify", "--json", str(migrated), "--baseline", str(baseline),
                                     check=1).stdout)
    assert as_json["baseline"]["passed"] is False
    assert as_json["baseline"]["findings"][0]["kind"] == "count_dropped"
    plain = json.loads(stores.call("store-migrate", "verify", "--json", str(migrated), check=0).stdout)
    assert plain["baseline"] is None


def test_help_explains_the_verdict(stores: Stores) -> None:
    text = stores.call("store-migrate", "compare", "--help", env={"COLUMNS": "200"}, check=0).stdout
    assert "Verdict: exit 1" in text and "more than --max-drop" in text and "not complete" in text
    verify = stores.call("store-migrate", "verify", "--help", env={"COLUMNS": "200"}, check=0).stdout
    assert "--additive" in verify and "VERIFY_ADDITIVE=1 turns it on" in verify
