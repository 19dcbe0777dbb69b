"""`store-migrate check`, and validation inside run and verify (warnings, --strict, VERIFY_STRICT)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RUN, VERIFY, Stores, load_json, log_events

GOOD_SHOUT = {"id": 1, "user_id": "u1", "zone": None, "body": "hi", "visibility": "public",
              "created_at": "2026-03-04T05:06:07Z", "updated_at": "2026-03-04T05:06:07Z"}


def test_check_readable_and_unreadable_files_with_exit_codes(stores: Stores, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"shouts": [GOOD_SHOUT]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"shouts": [GOOD_SHOUT, {**GOOD_SHOUT, "id": 7.0, "visibility": None}]}))
    done = stores.call("store-migrate", "check", "--kind", "domain", str(good), check=0)
    assert done.stdout == f"readable: {good} (domain)\n"
    done = stores.call("store-migrate", "check", "--kind", "domain", str(good), str(bad), check=1)
    assert done.stdout.splitlines() == [
        f"readable: {good} (domain)",
        f"not readable: {bad} (domain): 1 record(s) the service cannot read",
        "  $.shouts[1].id: is written with a fraction or exponent; the service reads only plain integers (7, not 7.0 or 7e0)",
        "  $.shouts[1].visibility: is null, but this field is required to hold a value",
    ]


def test_check_json_output(stores: Stores, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"sessions": {')
    fine = tmp_path / "fine.json"
    fine.write_text("{}")
    done = stores.call("store-migrate", "check", "--kind", "auth", "--json", str(fine), str(broken), check=1)
    result = json.loads(done.stdout)
    assert result[0] == {"path": str(fine), "kind": "auth", "readable": True, "unreadable": 0, "problems": []}
    assert result[1]["readable"] is False and result[1]["kind"] == "auth"
    assert result[1]["problems"][0]["pointer"] == "$"
    assert result[1]["problems"][0]["message"].startswith("does not parse: unexpected end of file")


def test_check_max_problems_and_usage_errors(stores: Stores, tmp_path: Path) -> None:
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"shouts": [{"id": "x"}] * 30}))
    done = stores.call("store-migrate", "check", "--kind", "domain", "--json", "--max-problems", "3", str(many), check=1)
    result = json.loads(done.stdout)[0]
    assert len(result["problems"]) == 3 and result["unreadable"] == 30
    assert stores.call("store-migrate", "check", str(many)).returncode == 2  # no --kind
    assert stores.call("store-migrate", "check", "--kind", "nope", str(many)).returncode == 2
    assert stores.call("store-migrate", "check", "--kind", "auth").returncode == 2  # no file


def test_check_depth_rule_on_a_compact_file(stores: Stores, tmp_path: Path) -> None:
    for depth, code in ((127, 0), (128, 1)):
        inner = "[" * (depth - 1) + "]" * (depth - 1)  # root is level 1, the arrays 2..depth
        path = tmp_path / f"deep{depth}.json"
        path.write_text(f'{{"x":{inner}}}')
        stores.call("store-migrate", "check", "--kind", "auth", str(path), check=code)


def test_run_warns_about_unreadable_records_and_counts_them(stores: Stores) -> None:
    stores.write("domain", {"shouts": [GOOD_SHOUT, {"id": 2}]})
    done = stores.call(RUN, check=0)
    warning = next(e for e in log_events(done.stderr) if e["event"] == "store.validated" and e["store"] == "domain")
    assert warning["level"] == "warning" and warning["unreadable"] == 1
    assert any(p.startswith("$.shouts[1].user_id: required field is missing") for p in warning["problems"])
    entries = {e["store"]: e for e in load_json(stores.newest_manifest())["stores"]}
    assert entries["domain"]["validation_problems"] == 1 and entries["auth"]["validation_problems"] == 0


def test_run_strict_refuses_and_writes_nothing(stores: Stores) -> None:
    path = stores.write("domain", {"shouts": [{"id": 2}]})
    before = path.read_bytes()
    done = stores.call(RUN, "--strict", check=1)
    assert "the service could not read 1 record(s) after migration (--strict)" in done.stderr
    assert "at $.shouts[0]" in done.stderr
    assert path.read_bytes() == before and not stores.work.exists()


def test_verify_fails_by_default_on_records_the_service_cannot_read_and_lists_them(stores: Stores) -> None:
    stores.write("domain", {"shouts": [{"id": 2}]})
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    assert load_json(Path(manifest))["stores"][2]["validation_problems"] == 1
    for extra, env in (((), {}), (("--strict",), {}), ((), {"VERIFY_STRICT": "1"})):
        done = stores.call(VERIFY, manifest, *extra, env=env, check=1)
        lines = done.stderr.splitlines()
        at = lines.index("error: [domain] the service cannot read 1 record(s); first:")
        assert lines[at + 1].startswith("  $.shouts[0].")  # listed, though the run recorded only a count
        assert "ok: [domain]" not in done.stdout and "ok: [auth]" in done.stdout
        assert "verification passed" not in done.stdout
        hint = next(line for line in lines if line.startswith("  next: "))
        assert "roll back" in hint and "--allow-unreadable" in hint


def test_allow_unreadable_turns_the_failure_back_into_a_warning(stores: Stores, tmp_path: Path) -> None:
    stores.write("domain", {"shouts": [{"id": 2}]})
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    for extra, env in ((("--allow-unreadable",), {}), ((), {"VERIFY_ALLOW_UNREADABLE": "1"})):
        done = stores.call(VERIFY, manifest, *extra, env=env, check=0)
        assert "warning: [domain] the service cannot read 1 record(s); first:" in done.stderr
        assert "ok: [domain]" in done.stdout and "verification passed" in done.stdout
    strict = stores.call(VERIFY, manifest, "--strict", "--allow-unreadable", check=0)
    assert "warning: [domain] the service cannot read 1 record(s); first:\n  $.shouts[0]." in strict.stderr


def test_the_report_never_says_passed_with_unreadable_records(stores: Stores, tmp_path: Path) -> None:
    stores.write("domain", {"shouts": [{"id": 2}]})
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    report = tmp_path / "cutover.md"
    stores.call(VERIFY, manifest, "--report", str(report), check=1)
    assert report.read_text().startswith("# Store backfill verification: FAILED")
    stores.call(VERIFY, manifest, "--report", str(report), "--allow-unreadable", check=0)
    text = report.read_text()
    assert "PASSED" not in text
    assert text.startswith("# Store backfill verification: ACCEPTED WITH UNREADABLE RECORDS (--allow-unreadable)")
    assert "- records the service cannot read: allowed" in text


def test_verify_validates_afresh_when_the_manifest_recorded_no_verdict(stores: Stores) -> None:
    stores.write("domain", {"shouts": [{"id": 2}]})
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    document = load_json(manifest)
    for entry in document["stores"]:
        del entry["validation_problems"]  # as the earlier implementation wrote it
    manifest.write_text(json.dumps(document))
    done = stores.call(VERIFY, str(manifest), check=1)
    assert "error: [domain] the service cannot read 1 record(s); first:" in done.stderr


def test_verify_strict_passes_on_readable_stores(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    stores.call(VERIFY, str(stores.newest_manifest()), env={"VERIFY_STRICT": "1"}, check=0)
