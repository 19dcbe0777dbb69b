"""verify: checksums, shape, counts and backups, every failure reported, the drop-in lines."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RUN, VERIFY, Stores, load_json, log_events

from store_migrate.commands import verify as verification
from store_migrate.fs import workers
from store_migrate.readable import parsing


@pytest.fixture
def migrated(stores: Stores) -> Path:
    stores.write_samples()
    stores.call(RUN, check=0)
    return stores.newest_manifest()


def test_verify_passes_with_the_drop_in_lines(stores: Stores, migrated: Path) -> None:
    done = stores.call(VERIFY, str(migrated), check=0)
    assert done.stdout.splitlines() == [
        f"ok: [auth] {stores.paths['auth']}",
        f"ok: [codex_threads] {stores.paths['codex_threads']}",
        f"ok: [domain] {stores.paths['domain']}",
        f"rust store backfill verification passed: {migrated}",
    ]


@pytest.mark.parametrize("kind", ["auth", "codex_threads", "domain"])
def test_a_one_byte_change_in_any_store_fails(stores: Stores, migrated: Path, kind: str) -> None:
    path = stores.paths[kind]
    data = bytearray(path.read_bytes())
    data[-3] = ord(" ") if data[-3] != ord(" ") else ord("\n")
    path.write_bytes(bytes(data))
    expected = next(e["after_sha256"] for e in load_json(migrated)["stores"] if e["store"] == kind)
    done = stores.call(VERIFY, str(migrated), check=1)
    lines = done.stderr.splitlines()
    at = lines.index(f"error: [{kind}] sha mismatch")
    assert lines[at + 1] == f"  expected: {expected}"
    assert lines[at + 2].startswith("  actual:   ") and len(lines[at + 2].split()[-1]) == 64
    assert f"ok: [{kind}]" not in done.stdout
    assert "verification passed" not in done.stdout


def test_a_deleted_store_fails(stores: Stores, migrated: Path) -> None:
    stores.paths["codex_threads"].unlink()
    done = stores.call(VERIFY, str(migrated), check=1)
    assert f"error: [codex_threads] store file missing: {stores.paths['codex_threads']}" in done.stderr.splitlines()


def test_missing_and_corrupted_backups_fail_and_every_failure_is_reported(stores: Stores, migrated: Path) -> None:
    entries = {e["store"]: e for e in load_json(migrated)["stores"]}
    Path(entries["auth"]["backup_path"]).unlink()
    Path(entries["domain"]["backup_path"]).write_bytes(b"{}")
    stores.paths["codex_threads"].write_bytes(b"{}")
    done = stores.call(VERIFY, str(migrated), check=1)
    errors = done.stderr.splitlines()
    assert f"error: [auth] backup missing: {entries['auth']['backup_path']}" in errors
    assert f"error: [domain] backup sha mismatch: {entries['domain']['backup_path']}" in errors
    assert "error: [codex_threads] sha mismatch" in errors
    assert any(line.startswith("error: [codex_threads] shape: top-level key") for line in errors)
    assert done.stdout == ""


def test_counts_are_recomputed_from_the_file(stores: Stores, migrated: Path) -> None:
    document = load_json(migrated)
    document["stores"][2]["counts"]["shouts"] = 99
    migrated.write_text(json.dumps(document))
    done = stores.call(VERIFY, str(migrated), check=1)
    assert "error: [domain] count shouts: manifest has 99, file has 2" in done.stderr.splitlines()


def test_a_stale_counter_is_a_shape_failure_even_when_the_hash_matches(stores: Stores, tmp_path: Path) -> None:
    """A manifest of the earlier implementation could describe a store with a stale counter."""
    import hashlib

    body = b'{"next_shout_id": 1, "shouts": [{"id": 5}]}'
    stores.paths["domain"].write_bytes(body)
    manifest = tmp_path / "old.json"
    digest = hashlib.sha256(body).hexdigest()
    manifest.write_text(json.dumps({
        "schema": "openagents.rust_store_migration.v1", "generated_at": "2026-02-22T08:55:02Z",
        "stores": [{"store": "domain", "path": str(stores.paths["domain"]), "existed": False,
                    "backup_path": None, "before_sha256": None, "after_sha256": digest, "changed": True,
                    "counts": {"autopilots": 0, "l402_paywalls": 0, "integrations": 0, "shouts": 1, "whispers": 0}}],
    }))
    done = stores.call(VERIFY, str(manifest), check=1)
    assert "error: [domain] shape: counter 'next_shout_id' is 1" in done.stderr
    assert "error: [domain] shape: top-level key 'autopilots' is missing" in done.stderr


def test_missing_argument_and_missing_manifest(stores: Stores) -> None:
    done = stores.call(VERIFY, check=1)
    assert done.stderr == f"usage: {VERIFY} <manifest-path>\n"
    done = stores.call(VERIFY, "/nowhere/manifest.json", check=1)
    assert done.stderr.splitlines()[0] == "error: manifest not found: /nowhere/manifest.json"


def test_a_manifest_that_is_not_complete_fails(stores: Stores, migrated: Path) -> None:
    document = load_json(migrated)
    document["status"] = "pending"
    migrated.write_text(json.dumps(document))
    done = stores.call(VERIFY, str(migrated), check=1)
    assert "is pending: the run that wrote it did not complete" in done.stderr


def test_plain_verify_does_not_parse_stores_whose_bytes_are_the_recorded_ones(stores: Stores, migrated: Path) -> None:
    """The run's recorded verdict stands for its own bytes (a summary gives shape and counts);
    a full parse and validation, logged as `store.validated`, is for --strict and changed bytes."""
    plain = log_events(stores.call(VERIFY, str(migrated), check=0).stderr)
    assert [e["event"] for e in plain if e["event"] == "store.validated"] == []
    assert {e["store"]: e["unreadable"] for e in plain if e["event"] == "store.verified"} == {
        "auth": 0, "codex_threads": 0, "domain": 0}
    strict = log_events(stores.call(VERIFY, "--strict", str(migrated), check=0).stderr)
    assert sorted(e["store"] for e in strict if e["event"] == "store.validated") == ["auth", "codex_threads", "domain"]
    stores.paths["domain"].write_bytes(stores.paths["domain"].read_bytes() + b"\n")
    changed = log_events(stores.call(VERIFY, str(migrated), check=1).stderr)
    assert [e["store"] for e in changed if e["event"] == "store.validated"] == ["domain"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="stores go to worker processes only with 2 cores or more")
def test_verify_in_worker_processes_maps_the_stores_and_parses_only_changed_bytes(
    stores: Stores, migrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big stores are verified by worker processes, which map the live file instead of copying
    it; bytes that are not the recorded ones are parsed in full from a copy of the map, and
    whatever those bytes hold (a dropped row, nesting too deep for the summary) is reported."""
    calls = tmp_path / "calls"

    def spy(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            with calls.open("a") as log:  # written from the worker processes
                log.write(f"{name} {args[0] if name == 'map' else args[0].name} {workers.in_worker()}\n")
            return original(*args, **kwargs)
        return called

    monkeypatch.setattr(verification, "map_store", spy("map", verification.map_store))
    monkeypatch.setattr(parsing, "one_pass", spy("parse", parsing.one_pass))
    monkeypatch.setattr(workers, "PARALLEL_BYTES", 1)  # the sample stores go to workers too

    def verified() -> tuple[verification.VerifyResult, list[str]]:
        calls.unlink(missing_ok=True)
        result = verification.verify(str(migrated))
        return result, sorted(calls.read_text().splitlines())

    result, seen = verified()
    assert result.ok and seen == sorted(f"map {kind} True" for kind in ("auth", "codex_threads", "domain"))

    domain = json.loads(stores.paths["domain"].read_bytes())
    del domain["shouts"][0]
    stores.paths["domain"].write_text(json.dumps(domain))
    stores.paths["codex_threads"].write_bytes(b'{"threads": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}")
    result, seen = verified()
    assert not result.ok
    assert seen == sorted([*(f"map {kind} True" for kind in ("auth", "codex_threads", "domain")),
                           "parse codex_threads True", "parse domain True"])
    problems = {check.store: check.problems for check in result.stores}
    assert problems["auth"] == []
    assert problems["domain"][0].startswith("sha mismatch") and "count shouts: manifest has 2, file has 1" in problems[
        "domain"]
    assert problems["codex_threads"][0].startswith("sha mismatch")
    assert "does not parse: nesting too deep to parse" in problems["codex_threads"]


def test_verify_reads_no_manifest_older_than_its_own(stores: Stores, migrated: Path) -> None:
    """Only a newer pending run stops verify (test_interrupts.py); older manifests are not even
    read, however many the work directory holds: one that cannot be read says nothing."""
    older = migrated.with_name("20000101T000000Z.json")
    older.write_text("{ not a manifest")
    done = stores.call(VERIFY, str(migrated), check=0)
    assert [e for e in log_events(done.stderr) if e["event"] == "manifest.skipped"] == []
    newer = migrated.with_name("29991231T235959Z.json")
    newer.write_text("{ not a manifest")
    done = stores.call(VERIFY, str(migrated), check=0)
    assert [e["path"] for e in log_events(done.stderr) if e["event"] == "manifest.skipped"] == [str(newer)]
