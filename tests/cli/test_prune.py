"""prune: what counts as still needed, and attacks on it (links, foreign names, no lock)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import STORE_FILES, STORE_VARS, Stores, load_json
from conftest import sha256 as sha256_of

from store_migrate.commands import run as cmd_run
from store_migrate.core import config
from store_migrate.fs import lock


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 2, 22, 8, 55, 2, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def runs(stores: Stores, count: int, change: tuple[str, ...] = tuple(STORE_FILES), clock: Clock | None = None) -> list[Path]:
    """`count` runs in this process; before each after the first, the stores in `change` get new bytes."""
    clock = clock or Clock()
    settings = config.resolve(environ=stores.environ, cwd=str(stores.root))
    made = []
    for n in range(count):
        if n:
            for kind in change:
                stores.paths[kind].write_text(json.dumps({"written_by_the_service": n}))
        made.append(Path(cmd_run.run(settings, clock=clock).manifest_path))
    return made


def prune(stores: Stores, *args: str, check: int = 0) -> list[str]:
    return stores.call("store-migrate", "prune", "--keep", "1", *args, check=check).stdout.splitlines()


def test_a_store_the_manifest_did_not_change_does_not_keep_it(stores: Stores) -> None:
    stores.write_samples()
    manifests = runs(stores, 6, change=("domain",))
    # every rerun carries the before state of auth and codex, which the first run migrated
    first = load_json(manifests[0])["stores"]
    for later in manifests[1:]:
        entries = load_json(later)["stores"]
        assert [e["before_sha256"] for e in entries[:2]] == [e["before_sha256"] for e in first[:2]]
    out = stores.call("store-migrate", "prune", "--keep", "2", check=0).stdout.splitlines()
    # auth and codex still hold the first run's after bytes, but the newest manifest rolls them back
    # to the same bytes; domain moved on at every run: only the newest two are needed
    for removed in manifests[:4]:
        assert f"removed: {removed}" in out and not removed.exists()
        assert f"removed: {stores.work / 'backups' / removed.stem}" in out
    assert all(m.exists() for m in manifests[4:])
    newest = manifests[-1]
    stores.call("store-migrate", "rollback", str(newest), check=0)  # its backups survived the pruning
    assert sha256_of(stores.paths["auth"]) == first[0]["before_sha256"]


@pytest.fixture
def prunable(stores: Stores) -> Path:
    """An old manifest whose stores have all moved on since (prune would remove it)."""
    stores.write_samples()
    first, _ = runs(stores, 2)
    assert f"would remove: {first}" in prune(stores, "--dry-run")
    return first


def test_a_backup_directory_replaced_by_a_link_is_not_followed(stores: Stores, prunable: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = [victim / f"auth-{prunable.stem}-{'a' * 12}.bak.json", victim / "other.txt"]
    for path in planted:
        path.write_text("precious")
    backups = stores.work / "backups" / prunable.stem
    for name in os.listdir(backups):
        os.unlink(backups / name)
    backups.rmdir()
    backups.symlink_to(victim)
    out = prune(stores)
    assert any(line.startswith(f"kept: {prunable} ({backups} is a link") for line in out)
    assert all(p.read_text() == "precious" for p in planted)
    assert backups.is_symlink() and prunable.exists()


def test_a_link_or_a_foreign_file_inside_a_backup_directory_is_not_followed_or_removed(
    stores: Stores, prunable: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    backups = stores.work / "backups" / prunable.stem
    backup = next(backups.glob("auth-*.bak.json"))
    backup.unlink()
    backup.symlink_to(victim)
    out = prune(stores)
    assert any(line.startswith(f"kept: {prunable} (its backup directory {backups} holds {backup.name}, which no run")
               for line in out)
    assert victim.read_text() == "precious" and backup.is_symlink() and prunable.exists()
    backup.unlink()
    (backups / "notes.txt").write_text("mine")
    out = prune(stores)
    assert any("holds notes.txt, which no run made" in line for line in out)
    assert (backups / "notes.txt").read_text() == "mine"
    (backups / "notes.txt").unlink()
    assert f"removed: {prunable}" in prune(stores)
    assert not backups.exists()


def test_only_manifest_names_runs_make_and_never_a_linked_one(stores: Stores, prunable: Path, tmp_path: Path) -> None:
    manifests = stores.work / "manifests"
    outside = tmp_path / "outside.json"
    outside.write_bytes(prunable.read_bytes())
    linked = manifests / "20200101T000000Z.json"
    linked.symlink_to(outside)
    odd = manifests / "keep-me.json"
    odd.write_bytes(prunable.read_bytes())
    out = prune(stores)
    assert f"kept: {linked} (not a regular file (link); prune removes only the manifests runs write)" in out
    assert f"kept: {odd} (not named like a run's manifest; never removed)" in out
    assert f"removed: {prunable}" in out
    assert linked.is_symlink() and outside.exists() and odd.exists()


def test_a_pending_manifest_is_kept(stores: Stores, prunable: Path) -> None:
    document = load_json(prunable)
    document["status"] = "pending"
    prunable.write_text(json.dumps(document))
    assert any(line.startswith(f"kept: {prunable} (pending: its run did not finish") for line in prune(stores))


def test_prune_takes_the_run_s_lock_before_it_looks(stores: Stores, prunable: Path) -> None:
    settings = config.resolve(environ=stores.environ, cwd=str(stores.root))
    with lock.locked([s.path for s in settings.stores], 5):
        done = stores.call("store-migrate", "prune", "--keep", "1", "--lock-timeout", "0.2", check=1)
    assert f"is locked by pid {os.getpid()}" in done.stderr
    assert prunable.exists()
    assert f"removed: {prunable}" in prune(stores)


def test_store_paths_through_links_are_followed_when_prune_asks_what_they_hold(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    links = tmp_path / "links"
    links.mkdir()
    for kind, path in stores.paths.items():
        (links / path.name).symlink_to(path)
        stores.environ[STORE_VARS[kind]] = str(links / path.name)
    clock = Clock()
    (first,) = runs(stores, 1, clock=clock)
    document = load_json(first)
    document["tool_version"] = "0.0.1"  # an earlier version's manifest: the next run carries nothing on
    first.write_text(json.dumps(document))
    runs(stores, 2, change=("domain",), clock=clock)
    out = prune(stores, "--dry-run")
    assert any(line.startswith(f"kept: {first} (auth, codex_threads still hold its after_sha256") for line in out), out
