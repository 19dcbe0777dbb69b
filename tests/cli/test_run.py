"""The backfill through the drop-in wrapper and `store-migrate run`: files, manifest, backups."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

from conftest import ROLLBACK, RUN, STORE_FILES, Stores, load_json, log_events, sha256

STAMP = r"\d{8}T\d{6}Z"


def test_wrapper_prints_the_drop_in_lines_and_writes_the_manifest(stores: Stores) -> None:
    stores.write_samples()
    before = stores.hashes()
    done = stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    backups = stores.work / "backups" / manifest.stem
    assert done.stdout.splitlines() == [
        f"rust-store-migrate: wrote manifest to {manifest}",
        f"[rust-store-backfill] manifest: {manifest}",
        f"[rust-store-backfill] backups: {backups}",
    ]
    assert re.fullmatch(STAMP, manifest.stem)
    document = load_json(manifest)
    assert document["schema"] == "openagents.rust_store_migration.v1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["generated_at"])
    assert document["status"] == "complete"
    assert [e["store"] for e in document["stores"]] == ["auth", "codex_threads", "domain"]
    for entry in document["stores"]:
        path = stores.paths[entry["store"]]
        assert entry["path"] == str(path) and os.path.isabs(entry["backup_path"])
        assert entry["existed"] is True and entry["changed"] is True
        assert entry["before_sha256"] == before[entry["store"]]
        assert entry["after_sha256"] == sha256(path)
        backup = Path(entry["backup_path"])
        assert backup.parent == backups
        assert backup.name == f"{entry['store']}-{manifest.stem}-{before[entry['store']][:12]}.bak.json"
        assert sha256(backup) == before[entry["store"]]
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert {e["store"]: e["counts"] for e in document["stores"]} == {
        "auth": {"users": 2, "sessions": 1, "personal_access_tokens": 0},
        "codex_threads": {"threads": 1, "messages": 2},
        "domain": {"autopilots": 1, "l402_paywalls": 0, "integrations": 1, "shouts": 2, "whispers": 0},
    }
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    assert stat.S_IMODE((stores.work / "manifests").stat().st_mode) == 0o700


def test_a_rerun_that_changes_nothing_writes_nothing_and_names_the_manifest_that_rolls_back(stores: Stores) -> None:
    stores.write_samples()
    first_run = stores.call(RUN, check=0)
    migrated = {k: p.read_bytes() for k, p in stores.paths.items()}
    inodes = {k: p.stat().st_ino for k, p in stores.paths.items()}
    first = stores.newest_manifest()
    backups = sorted((stores.work / "backups").iterdir())
    for _ in range(2):
        again = stores.call(RUN, check=0)
        assert again.stdout == first_run.stdout, "the drop-in lines name the manifest whose after bytes the stores hold"
        assert any(e["event"] == "run.already_migrated" for e in log_events(again.stderr))
    assert stores.manifests() == [first] and sorted((stores.work / "backups").iterdir()) == backups
    assert {k: p.read_bytes() for k, p in stores.paths.items()} == migrated
    assert {k: p.stat().st_ino for k, p in stores.paths.items()} == inodes, "unchanged stores are not rewritten"


def test_runs_in_the_same_second_keep_every_manifest_and_the_newest_sorts_last(stores: Stores) -> None:
    stores.write_samples()
    for i in range(3):
        stores.paths["domain"].write_text(json.dumps({"shouts": [{"id": i}]}))  # the service wrote meanwhile
        stores.call(RUN, check=0)
    manifests = stores.manifests()
    assert len(manifests) == 3 and len({m.stem for m in manifests}) == 3
    assert sorted(os.listdir(stores.work / "manifests")) == [m.name for m in manifests]
    newest = {e["store"]: e for e in load_json(manifests[-1])["stores"]}
    first = {e["store"]: e for e in load_json(manifests[0])["stores"]}
    # auth and codex were migrated by the first run: the newest manifest carries their pre-migration state
    for kind in ("auth", "codex_threads"):
        assert newest[kind]["before_sha256"] == first[kind]["before_sha256"] != newest[kind]["after_sha256"]
        assert newest[kind]["changed"] is True and sha256(Path(newest[kind]["backup_path"])) == first[kind]["before_sha256"]
    assert newest["domain"]["before_sha256"] != first["domain"]["before_sha256"]


def test_missing_stores_are_created_empty_and_recorded_as_not_existing(stores: Stores) -> None:
    done = stores.call(RUN, "--allow-missing", check=0)
    document = load_json(stores.newest_manifest())
    for entry in document["stores"]:
        assert entry["existed"] is False and entry["backup_path"] is None and entry["before_sha256"] is None
        assert entry["changed"] is True
        path = stores.paths[entry["store"]]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert entry["after_sha256"] == sha256(path)
    assert os.listdir(stores.work / "backups" / stores.newest_manifest().stem) == []
    events = [e["event"] for e in log_events(done.stderr)]
    assert events.count("store.replaced") == 3


def test_replaced_store_keeps_its_mode(stores: Stores) -> None:
    stores.write_samples()
    os.chmod(stores.paths["auth"], 0o640)
    stores.call(RUN, check=0)
    assert stat.S_IMODE(stores.paths["auth"].stat().st_mode) == 0o640


def test_service_variables_are_the_fallback_for_store_paths(stores: Stores, tmp_path: Path) -> None:
    elsewhere = tmp_path / "service-env"
    elsewhere.mkdir()
    env = {var: "" for var in ("AUTH_STORE_PATH", "CODEX_THREAD_STORE_PATH", "DOMAIN_STORE_PATH")}
    env.update(
        OA_AUTH_STORE_PATH=str(elsewhere / "a.json"),
        OA_CODEX_THREAD_STORE_PATH=str(elsewhere / "c.json"),
        OA_DOMAIN_STORE_PATH=str(elsewhere / "d.json"),
    )
    stores.call(RUN, "--allow-missing", env=env, check=0)
    paths = [e["path"] for e in load_json(stores.newest_manifest())["stores"]]
    assert paths == [str(elsewhere / n) for n in ("a.json", "c.json", "d.json")]
    # the explicit variable wins over the service's
    stores.call(RUN, "--allow-missing", env={**env, "AUTH_STORE_PATH": str(stores.paths["auth"])}, check=0)
    assert load_json(stores.newest_manifest())["stores"][0]["path"] == str(stores.paths["auth"])


def test_defaults_live_under_root_dir(stores: Stores) -> None:
    env = {var: "" for var in ("AUTH_STORE_PATH", "CODEX_THREAD_STORE_PATH", "DOMAIN_STORE_PATH", "WORK_DIR")}
    done = stores.call(RUN, "--allow-missing", env=env, check=0)
    storage = stores.root / "apps" / "openagents.com" / "storage" / "app"
    manifest = sorted((storage / "rust-store-migrate" / "manifests").glob("*.json"))[-1]
    assert f"[rust-store-backfill] manifest: {manifest}" in done.stdout
    assert [e["path"] for e in load_json(manifest)["stores"]] == [str(storage / n) for n in STORE_FILES.values()]


def test_root_dir_defaults_to_the_git_top_level(stores: Stores) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(stores.root)], check=True)
    nested = stores.root / "deep" / "er"
    nested.mkdir(parents=True)
    env = {var: "" for var in ("AUTH_STORE_PATH", "CODEX_THREAD_STORE_PATH", "DOMAIN_STORE_PATH", "WORK_DIR", "ROOT_DIR")}
    done = subprocess.run([RUN, "--allow-missing"], cwd=nested, env={**stores.environ, **env}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert str(stores.root / "apps" / "openagents.com" / "storage" / "app" / "rust-store-migrate") in done.stdout


def test_empty_file_is_refused_unless_allowed(stores: Stores) -> None:
    stores.write("auth", b"")
    done = stores.call("store-migrate", "run", check=1)
    assert f"refusing to migrate {stores.paths['auth']}: the file is empty" in done.stderr
    assert not stores.work.exists()
    stores.call("store-migrate", "run", "--allow-empty", check=0)
    entry = load_json(stores.newest_manifest())["stores"][0]
    assert entry["existed"] is True and entry["before_sha256"] == sha256(Path(entry["backup_path"]))


def test_a_directory_where_a_store_should_be_is_refused(stores: Stores) -> None:
    stores.paths["domain"].mkdir()
    done = stores.call("store-migrate", "run", check=1)
    assert "not a regular file" in done.stderr and str(stores.paths["domain"]) in done.stderr
    assert not stores.work.exists()


def test_logs_are_json_lines_with_paths_hashes_and_timings_but_no_contents(stores: Stores) -> None:
    stores.write_samples()
    done = stores.call(RUN, check=0)
    events = log_events(done.stderr)
    assert len(events) == len(done.stderr.splitlines()), "every stderr line is one JSON event"
    names = [e["event"] for e in events]
    for expected in ("store.read", "store.transformed", "backup.written", "manifest.written", "store.replaced"):
        assert expected in names
    read = next(e for e in events if e["event"] == "store.read")
    assert {"store", "path", "sha256", "bytes", "duration_ms", "timestamp", "level"} <= set(read)
    for secret in ("oa_at_demo_not_a_secret", "oa_rt_demo_not_a_secret", "enc:demo", "ada@example.com"):
        assert secret not in done.stderr


def test_help_exists_for_every_entry_point(stores: Stores) -> None:
    for command in ("store-migrate", "store-migrate-backfill", "store-migrate-verify", "store-migrate-rollback"):
        done = stores.call(command, "--help", check=0)
        assert "Usage" in done.stdout
    for sub in ("run", "verify", "rollback"):
        assert "--log-format" in stores.call("store-migrate", sub, "--help", check=0).stdout


def test_usage_errors_exit_2(stores: Stores) -> None:
    assert stores.call("store-migrate", "run", "--no-such-option").returncode == 2
    assert stores.call("store-migrate", "verify").returncode == 2
    assert stores.call("store-migrate", "run", "--log-format", "xml").returncode == 2


def test_rerun_does_not_parse_stores_a_complete_manifest_proves_migrated(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    second = stores.call(RUN, check=0)
    shortcut = [e for e in log_events(second.stderr) if e["event"] == "store.already_migrated"]
    assert sorted(e["store"] for e in shortcut) == sorted(STORE_FILES)
    assert not any(e["event"] == "store.transformed" for e in log_events(second.stderr))
    assert len(stores.manifests()) == 1
    # a store changed since is parsed again
    stores.paths["auth"].write_text('{"users_by_id": {}}')
    third = stores.call(RUN, check=0)
    transformed = [e["store"] for e in log_events(third.stderr) if e["event"] == "store.transformed"]
    assert transformed == ["auth"]


def test_rerun_parses_again_when_the_manifest_came_from_another_tool_version(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    document = load_json(manifest)
    document["tool_version"] = "0.0.1"
    manifest.write_text(json.dumps(document))
    again = stores.call(RUN, check=0)
    assert not any(e["event"] == "store.already_migrated" for e in log_events(again.stderr))


def test_identical_backups_are_hard_links(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    stores.call(ROLLBACK, str(stores.newest_manifest()), check=0)
    stores.call(RUN, check=0)
    first, second = (load_json(m) for m in stores.manifests())
    for before, after in zip(first["stores"], second["stores"], strict=True):
        assert os.stat(before["backup_path"]).st_ino == os.stat(after["backup_path"]).st_ino
        assert sha256(Path(after["backup_path"])) == after["before_sha256"]


def test_rerun_trusts_an_unchanged_file_identity_and_hashes_a_changed_one(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    first = load_json(stores.newest_manifest())
    assert all(set(e["after_identity"]) == {"device", "inode", "size", "mtime_ns", "ctime_ns"} for e in first["stores"])
    second = stores.call(RUN, check=0)
    reads = [e for e in log_events(second.stderr) if e["event"] == "store.read"]
    assert [e.get("hashed") for e in reads] == [False, False, False]
    os.utime(stores.paths["domain"])  # same bytes, another identity: hashed, still already migrated
    third = stores.call(RUN, check=0)
    reads = [e for e in log_events(third.stderr) if e["event"] == "store.read"]
    assert [e.get("hashed") for e in reads] == [False, False, None]
    assert len(stores.manifests()) == 1


def test_the_runbooks_newest_manifest_always_rolls_the_migration_back(stores: Stores) -> None:
    """Run, reruns (one after the service wrote a store), then roll back the manifest
    `ls -1 manifests/*.json | sort | tail -n 1` picks: every store is back to its bytes before
    the migration (for the store the service wrote, its bytes before the rerun that migrated them)."""
    stores.write_samples()
    original = {k: p.read_bytes() for k, p in stores.paths.items()}
    stores.call(RUN, check=0)
    stores.call(RUN, check=0)
    stores.paths["domain"].write_text('{"shouts": [{"id": 5}]}')
    written = stores.paths["domain"].read_bytes()
    stores.call(RUN, check=0)
    stores.call(RUN, check=0)
    newest = subprocess.run(f"ls -1 {stores.work}/manifests/*.json | sort | tail -n 1", shell=True,
                            capture_output=True, text=True, check=True).stdout.strip()
    done = stores.call(ROLLBACK, newest, check=0)
    assert "skipped" not in done.stdout
    assert {k: p.read_bytes() for k, p in stores.paths.items()} == {**original, "domain": written}
