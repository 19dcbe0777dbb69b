"""restore.py on its own: `plan` and `apply` for each store of a real manifest (written by one
real run, in this process, on auth and codex_threads; domain did not exist and was created)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Stores

# One line per module: the modules are moving into packages, and a script rewrites these lines.
# isort: off
from store_migrate.commands import run as cmd_run
from store_migrate.core import config
from store_migrate import errors
from store_migrate.core import manifest
from store_migrate.commands import rollback as restore
from store_migrate.core import workdir
# isort: on

ROLLBACK_STAMP = "20990101T000000Z"
SPARE_UID, SPARE_GID = 4242, 4243


@dataclass
class Migrated:
    stores: Stores
    record: manifest.Manifest
    backup_dir: str
    originals: dict[str, bytes]

    def entry(self, kind: str) -> manifest.StoreEntry:
        return next(e for e in self.record.stores if e.store == kind)

    def plan(self, kind: str, force: bool = False) -> tuple[restore.RollbackAction, str | None]:
        return restore.plan(self.entry(kind), str(self.stores.paths[kind]), force)

    def planned(self, kind: str, force: bool = False) -> restore.RollbackAction:
        action, problem = self.plan(kind, force)
        assert problem is None, problem
        return action

    def apply(self, action: restore.RollbackAction, siblings: tuple[str, ...] | None = None) -> None:
        if siblings is None:
            siblings = tuple(str(p) for p in self.stores.paths.values())
        restore.apply(action, self.backup_dir, ROLLBACK_STAMP, siblings)


@pytest.fixture
def migrated(stores: Stores) -> Migrated:
    stores.write_samples()
    stores.paths["domain"].unlink()
    originals = {kind: stores.paths[kind].read_bytes() for kind in ("auth", "codex_threads")}
    cmd_run.run(config.resolve(stores.environ, cwd=str(stores.root)))  # what the run wrapper calls
    path = stores.newest_manifest()
    record = manifest.load(str(path), changes=True)
    assert [(e.store, e.existed, e.changed) for e in record.stores] == [
        ("auth", True, True), ("codex_threads", True, True), ("domain", False, True)]
    return Migrated(stores, record, str(stores.work / "backups" / path.stem), originals)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode_and_owner(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_a_migrated_store_is_restored_from_its_backup(migrated: Migrated) -> None:
    """Catches: a restore that writes anything but the backup's bytes, or reads a store its identity already proves."""
    action = migrated.planned("auth")
    assert (action.action, action.reason, action.forced) == ("restored", "", False)
    assert action.live_data is None  # known by the identity the run recorded: not read again
    migrated.apply(action)
    assert migrated.stores.paths["auth"].read_bytes() == migrated.originals["auth"]
    assert sorted(os.listdir(migrated.backup_dir)) == sorted(  # nothing kept: nothing had drifted
        os.path.basename(migrated.entry(k).backup_path or "") for k in ("auth", "codex_threads"))


def test_a_restored_store_keeps_the_owner_and_mode_of_the_file_it_replaces(migrated: Migrated) -> None:
    """Catches: a restored store left root-owned 0600, which the service (another user) could not read."""
    live = migrated.stores.paths["codex_threads"]
    os.chown(live, SPARE_UID, SPARE_GID)
    os.chmod(live, 0o640)
    action = migrated.planned("codex_threads")
    assert action.action == "restored" and action.live_data is not None  # its identity changed: read and hashed
    migrated.apply(action)
    assert live.read_bytes() == migrated.originals["codex_threads"]
    assert mode_and_owner(live) == (0o640, SPARE_UID, SPARE_GID)


def test_a_store_already_at_its_before_bytes_is_skipped(migrated: Migrated) -> None:
    """Catches: rewriting a store that needs nothing (a rerun of an interrupted rollback would touch it again)."""
    live = migrated.stores.paths["auth"]
    live.write_bytes(migrated.originals["auth"])
    inode = os.stat(live).st_ino
    action = migrated.planned("auth")
    assert (action.action, action.reason) == ("skipped", "already at before_sha256")
    migrated.apply(action)
    assert os.stat(live).st_ino == inode and live.read_bytes() == migrated.originals["auth"]


def test_a_store_the_run_created_is_removed(migrated: Migrated) -> None:
    """Catches: a created store left in place (or emptied) by the rollback."""
    action = migrated.planned("domain")
    assert action.action == "removed" and action.backup is None
    migrated.apply(action)
    assert not migrated.stores.paths["domain"].exists()


def test_a_created_store_already_gone_is_skipped(migrated: Migrated) -> None:
    """Catches: failing on (or recreating) a created store that is already absent."""
    migrated.stores.paths["domain"].unlink()
    action = migrated.planned("domain")
    assert (action.action, action.reason) == ("skipped", "already absent")
    migrated.apply(action)
    assert not migrated.stores.paths["domain"].exists()


def test_a_missing_store_is_recreated_with_the_owner_and_mode_of_a_sibling(migrated: Migrated) -> None:
    """Catches: a recreated store the service cannot read (root's, 0600) when its siblings are the service's."""
    migrated.stores.paths["auth"].unlink()
    sibling = migrated.stores.paths["codex_threads"]
    os.chown(sibling, SPARE_UID, SPARE_GID)
    os.chmod(sibling, 0o640)
    action = migrated.planned("auth")
    assert (action.action, action.reason) == ("restored", "file missing")
    migrated.apply(action)
    assert migrated.stores.paths["auth"].read_bytes() == migrated.originals["auth"]
    assert mode_and_owner(migrated.stores.paths["auth"]) == (0o640, SPARE_UID, SPARE_GID)


def test_a_missing_store_without_a_sibling_gets_the_directorys_owner_and_0600(migrated: Migrated) -> None:
    """Catches: a recreated store with the umask's mode (readable by all) or root's ownership in the service's directory."""
    live = migrated.stores.paths["auth"]
    live.unlink()
    os.chown(live.parent, SPARE_UID, SPARE_GID)
    action = migrated.planned("auth")
    migrated.apply(action, siblings=(str(live),))
    assert live.read_bytes() == migrated.originals["auth"]
    assert mode_and_owner(live) == (0o600, SPARE_UID, SPARE_GID)


def test_a_store_written_after_the_migration_is_refused_without_force(migrated: Migrated) -> None:
    """Catches: a rollback that silently throws away what the service wrote since the run."""
    live = migrated.stores.paths["auth"]
    live.write_bytes(b'{"users": {"secret-user@example.com": {}}}')
    action, problem = migrated.plan("auth")
    assert problem is not None
    assert "was written after the migration" in problem and "--force" in problem
    assert sha256(live.read_bytes()) in problem and "secret-user" not in problem
    assert not action.forced
    _, problem = migrated.plan("domain")  # a created store rewritten since: also drift
    assert problem is None
    migrated.stores.paths["domain"].write_bytes(b"{}")
    _, problem = migrated.plan("domain")
    assert problem is not None and "was written after the migration" in problem


@pytest.mark.parametrize("kind", ["auth", "domain"])
def test_a_forced_rollback_keeps_the_newer_file_first(migrated: Migrated, kind: str) -> None:
    """Catches: --force losing the newer bytes (no copy, a copy with other bytes, or one under another name)."""
    live = migrated.stores.paths[kind]
    newer = b'{"users": {"written-later": {}}}'
    live.write_bytes(newer)
    action = migrated.planned(kind, force=True)
    assert action.forced and action.action == ("restored" if kind == "auth" else "removed")
    migrated.apply(action)
    kept = os.path.join(migrated.backup_dir, workdir.pre_rollback_name(kind, ROLLBACK_STAMP, sha256(newer)))
    assert action.kept_as == kept
    assert Path(kept).read_bytes() == newer
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    if kind == "auth":
        assert live.read_bytes() == migrated.originals["auth"]
    else:
        assert not live.exists()


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda backup: backup.write_bytes(backup.read_bytes() + b" "), "backup sha mismatch"),
    (lambda backup: backup.unlink(), "backup missing"),
])
def test_a_backup_that_does_not_hold_the_before_bytes_is_refused(
    migrated: Migrated, damage: Callable[[Path], object], reason: str
) -> None:
    """Catches: restoring a damaged or missing backup over the store (the last good copy would be lost)."""
    backup = Path(migrated.entry("auth").backup_path or "")
    damage(backup)
    before = migrated.stores.paths["auth"].read_bytes()
    _, problem = migrated.plan("auth", force=True)
    assert problem is not None and problem.startswith(f"[auth] {reason}: {backup}")
    assert migrated.stores.paths["auth"].read_bytes() == before


@pytest.mark.parametrize(("kind", "change"), [
    ("auth", lambda live: live.write_bytes(b"{}")),  # restore planned over the after bytes
    ("domain", lambda live: live.write_bytes(b"{}")),  # removal planned
    ("auth", lambda live: os.utime(live, ns=(1, 1))),  # same bytes, touched: identity differs
])
def test_a_store_changed_between_plan_and_apply_is_left_alone(
    migrated: Migrated, kind: str, change: Callable[[Path], object]
) -> None:
    """Catches: applying a plan to a file that is no longer the one planned for (the service's new write lost)."""
    live = migrated.stores.paths[kind]
    action = migrated.planned(kind)
    change(live)
    now = live.read_bytes()
    with pytest.raises(errors.ConcurrentWrite, match="changed on disk during the rollback"):
        migrated.apply(action)
    assert live.read_bytes() == now
    assert not any(name.endswith(workdir.PRE_ROLLBACK_SUFFIX) for name in os.listdir(migrated.backup_dir))


def test_a_store_recreated_between_plan_and_apply_is_left_alone(migrated: Migrated) -> None:
    """Catches: a restore of a missing file that overwrites one created after the plan."""
    live = migrated.stores.paths["auth"]
    live.unlink()
    action = migrated.planned("auth")
    live.write_bytes(b"{}")
    with pytest.raises(errors.ConcurrentWrite):
        migrated.apply(action)
    assert live.read_bytes() == b"{}"


def test_a_forced_plan_whose_file_changes_again_keeps_nothing_and_changes_nothing(migrated: Migrated) -> None:
    """Catches: keeping (and replacing) a drifted file that changed once more after it was read."""
    live = migrated.stores.paths["auth"]
    live.write_bytes(b'{"users": {}}')
    action = migrated.planned("auth", force=True)
    live.write_bytes(b'{"users": {"newest": {}}}')
    with pytest.raises(errors.ConcurrentWrite):
        migrated.apply(action)
    assert live.read_bytes() == b'{"users": {"newest": {}}}'
    assert not any(name.endswith(workdir.PRE_ROLLBACK_SUFFIX) for name in os.listdir(migrated.backup_dir))
