"""Operator experience: dry run, evidence reports, baseline drops, quiet, version, prune."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from conftest import BIN, ROLLBACK, RUN, VERIFY, Stores, load_json, log_events


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dry_run_reports_everything_and_writes_nothing(stores: Stores) -> None:
    stores.write_samples()
    stores.paths["codex_threads"].unlink()
    before = listing(stores.root)
    hashes = stores.hashes()
    done = stores.call("store-migrate", "run", "--dry-run", check=0)
    out = done.stdout.splitlines()
    assert out[0] == f"dry run: [auth] {stores.paths['auth']} (exists, 1131 bytes)"
    assert "  would add keys: revoked_refresh_tokens, revoked_refresh_token_ids, users_by_workos_id" in out
    assert "  would replace null or the other empty container: personal_access_tokens" in out
    assert f"dry run: [codex_threads] {stores.paths['codex_threads']} (missing, would be created)" in out
    assert "  counter next_shout_id: 5 -> 42" in out
    assert "  counter next_user_integration_id: 9 (unchanged)" in out
    assert "  counter next_whisper_id: missing -> 1" in out
    assert any(line.startswith("  bytes would change: yes (1131 -> ") for line in out)
    assert out[-1] == "dry run: nothing was written"
    assert listing(stores.root) == before and stores.hashes() == hashes


def test_dry_run_through_the_wrapper_with_dry_run_1_and_it_refuses_like_a_run(stores: Stores) -> None:
    stores.write_samples()
    done = stores.call(RUN, env={"DRY_RUN": "1"}, check=0)
    assert done.stdout.splitlines()[-1] == "dry run: nothing was written"
    assert not stores.work.exists()
    stores.write("auth", b'{"sessions": [1]}')
    before = listing(stores.root)
    refused = stores.call(RUN, env={"DRY_RUN": "1"}, check=1)
    assert "refusing to migrate" in refused.stderr and "'sessions' must hold an object" in refused.stderr
    assert listing(stores.root) == before


def test_dry_run_after_a_run_says_nothing_would_change(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    done = stores.call("store-migrate", "run", "--dry-run", check=0)
    assert done.stdout.count("  bytes would change: no") == 3
    assert done.stdout.count("already migrated") == 3


@pytest.fixture
def migrated(stores: Stores) -> Path:
    stores.write_samples()
    stores.call(RUN, check=0)
    return stores.newest_manifest()


def test_verify_report_markdown_and_json(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    report = tmp_path / "evidence" / "cutover.md"
    done = stores.call(VERIFY, str(migrated), "--report", str(report), check=0)
    assert "rust store backfill verification passed" in done.stdout
    text = report.read_text()
    assert text.startswith("# Store backfill verification: PASSED")
    assert f"- manifest: `{migrated}`" in text
    assert "| auth | users | 2 |" in text and "| codex_threads | messages | 2 |" in text
    assert "## Sign-off" in text
    entries = load_json(migrated)["stores"]
    for entry in entries:
        assert f"expected `{entry['after_sha256']}`, actual `{entry['after_sha256']}`" in text
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    as_json = json.loads(stores.call("store-migrate", "verify", "--json", str(migrated), check=0).stdout)
    assert as_json["passed"] is True and as_json["manifest"]["path"] == str(migrated)
    assert [s["checksum"]["parity"] for s in as_json["stores"]] == [True, True, True]
    assert [s["backup"]["intact"] for s in as_json["stores"]] == [True, True, True]
    assert as_json["stores"][0]["counts"] == entries[0]["counts"]


def test_failed_verify_report_says_why(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    stores.paths["domain"].write_text("{}")
    report = tmp_path / "failed.md"
    stores.call(VERIFY, str(migrated), "--report", str(report), check=1)
    text = report.read_text()
    assert text.startswith("# Store backfill verification: FAILED")
    assert "| domain |" in text and "| NO |" in text
    assert "- domain: sha mismatch" in text


def test_reports_never_go_into_manifests(stores: Stores, migrated: Path) -> None:
    done = stores.call(VERIFY, str(migrated), "--report", str(migrated.parent / "report.md"), check=1)
    assert "refusing to write report" in done.stderr
    assert [p.name for p in migrated.parent.iterdir()] == [migrated.name]


def test_rollback_report_records_the_drill(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    report = tmp_path / "drill.md"
    stores.call(ROLLBACK, str(migrated), "--report", str(report), check=0)
    text = report.read_text()
    assert text.startswith("# Store rollback drill: PASSED")
    assert f"| auth | `{stores.paths['auth']}` | restored |" in text
    assert "## Sign-off" in text


def test_baseline_fails_on_drops_beyond_max_drop(stores: Stores, migrated: Path) -> None:
    baseline = migrated.with_name("baseline-copy.json.keep")
    document = load_json(migrated)
    document["stores"][2]["counts"]["shouts"] = 7
    baseline.write_text(json.dumps(document))
    done = stores.call(VERIFY, str(migrated), "--baseline", str(baseline), check=1)
    assert f"error: [domain] count shouts dropped by 5 against baseline {baseline} (7 -> 2; --max-drop 0)" in done.stderr
    stores.call(VERIFY, str(migrated), "--baseline", str(baseline), "--max-drop", "5", check=0)
    stores.call(VERIFY, str(migrated), "--baseline", str(migrated), check=0)
    missing = stores.call(VERIFY, str(migrated), "--baseline", "/nowhere.json", check=1)
    assert "manifest not found: /nowhere.json" in missing.stderr
    baseline.unlink()


def test_quiet_keeps_the_drop_in_lines_and_drops_info_logs(stores: Stores) -> None:
    stores.write_samples()
    done = stores.call(RUN, "--quiet", check=0)
    assert done.stdout.count("[rust-store-backfill]") == 2
    assert all(e["level"] in ("warning", "error") for e in log_events(done.stderr))
    verify = stores.call(VERIFY, str(stores.newest_manifest()), "-q", check=0)
    assert verify.stderr == ""


def test_every_json_log_line_of_every_command_parses(stores: Stores) -> None:
    stores.write_samples()
    outputs = [stores.call(RUN, check=0)]
    manifest = str(stores.newest_manifest())
    outputs += [stores.call(VERIFY, manifest, check=0), stores.call(ROLLBACK, manifest, check=0)]
    for done in outputs:
        lines = done.stderr.splitlines()
        assert lines and all(isinstance(json.loads(line), dict) for line in lines)


def test_version_and_completion(stores: Stores) -> None:
    from store_migrate import __version__

    assert stores.call("store-migrate", "--version", check=0).stdout == f"store-migrate {__version__}\n"
    assert "--install-completion" in stores.call("store-migrate", "--help", check=0).stdout


def test_prune_keeps_the_newest_and_the_ones_still_live(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    first = stores.newest_manifest()
    document = load_json(first)
    document["tool_version"] = "0.0.1"  # an earlier version's manifest: the next run proves nothing from it
    first.write_text(json.dumps(document))
    stores.call(RUN, check=0)
    second = stores.newest_manifest()
    assert [e["changed"] for e in load_json(second)["stores"]] == [False, False, False]
    done = stores.call("store-migrate", "prune", "--keep", "1", check=0)
    out = done.stdout.splitlines()
    assert f"kept: {second} (one of the newest 1)" in out
    assert any(line.startswith(f"kept: {first} (auth, codex_threads, domain still hold its after_sha256")
               for line in out)
    # once every store has moved on, old manifests and their backups go
    for path in stores.paths.values():
        path.write_text('{"moved": "on"}')
    stores.call(RUN, check=0)
    newest = stores.newest_manifest()
    dry = stores.call("store-migrate", "prune", "--keep", "1", "--dry-run", check=0)
    assert f"would remove: {first}" in dry.stdout and first.exists()
    done = stores.call("store-migrate", "prune", "--keep", "1", check=0)
    for manifest in (first, second):
        assert f"removed: {manifest}" in done.stdout and not manifest.exists()
        assert not (stores.work / "backups" / manifest.stem).exists()
    assert newest.exists() and (stores.work / "backups" / newest.stem).is_dir()
    assert stores.call("store-migrate", "prune", "--keep", "0").returncode == 2


def test_make_prune_target_exists() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "\nprune:" in makefile and "KEEP" in makefile
    assert os.access(Path(__file__).resolve().parents[2] / "scripts" / "run-rust-ownership-backfill.sh", os.X_OK)


def _big_codex(stores: Stores) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import generate

    stores.write("codex_threads", json.dumps(generate.codex(6_000_000, generate.random.Random(2))))


def _on_a_terminal(stores: Stores, command: str) -> str:
    """Run a shell command with stdout and stderr on a pseudo-terminal; what the terminal showed."""
    import subprocess

    if shutil.which("script") is None:
        pytest.skip("util-linux `script` is needed to give the command a terminal")
    log = stores.root / "terminal.log"
    subprocess.run(["script", "-qec", command, str(log)], env=stores.environ, cwd=stores.root,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=120)
    return log.read_text(errors="replace")


def test_progress_bars_on_a_terminal_only(stores: Stores) -> None:
    stores.write_samples()
    _big_codex(stores)
    piped = stores.call("store-migrate", "run", "--dry-run", check=0)
    assert "parsing, checking and encoding" not in piped.stderr + piped.stdout
    tool = BIN / "store-migrate"
    shown = _on_a_terminal(stores, f"{tool} run --dry-run --log-format json")
    assert "parsing, checking and encoding 3 store(s)" in shown
    quiet = _on_a_terminal(stores, f"{tool} run --dry-run -q")
    assert "parsing, checking and encoding" not in quiet


def test_prune_never_removes_files_a_forced_rollback_kept(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    first = stores.newest_manifest()
    stores.paths["auth"].write_text('{"written": "by the service"}')
    stores.call(ROLLBACK, str(first), "--force", check=0)
    kept = list((stores.work / "backups" / first.stem).glob("*.pre-rollback.json"))
    assert len(kept) == 1
    for path in stores.paths.values():
        path.write_text('{"moved": "on"}')
    stores.call(RUN, check=0)
    done = stores.call("store-migrate", "prune", "--keep", "1", check=0)
    assert f"kept: {first} (its backups hold files a forced rollback kept" in done.stdout
    assert kept[0].exists() and first.exists()
