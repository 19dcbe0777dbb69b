"""backups.py on its own: `write_backup`, `holds` and `EarlyCopies` as a run uses them, on stores
prepared by `prepare.prepare` / `prepare.check_known` from real files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import EXAMPLES, STORE_FILES, Stores

# One line per module: the modules are moving into packages, and a script rewrites these lines.
# isort: off
from store_migrate.commands import run as backfill
from store_migrate.commands import backups
from store_migrate.commands import run as cmd_run
from store_migrate.core import config
from store_migrate import errors
from store_migrate.commands import prepare
from store_migrate.core import workdir
# isort: on

STAMP = "20260222T085502Z"
LATER = "20260223T091500Z"
SPARE_UID, SPARE_GID = 4242, 4243


@dataclasses.dataclass
class Run:
    store: Path
    root: Path
    """$WORK_DIR/backups"""
    progress: list[int] = dataclasses.field(default_factory=list)

    def directory(self, stamp: str = STAMP) -> Path:
        directory = self.root / stamp
        directory.mkdir(exist_ok=True)
        return directory

    def prepared(self) -> prepare.PreparedStore:
        return prepare.prepare("auth", str(self.store), str(self.store), write=False)

    def back_up(self, prepared: prepare.PreparedStore, stamp: str = STAMP, early: backups.Copy | None = None) -> str | None:
        return backups.write_backup(prepared, stamp, str(self.directory(stamp)), self.progress.append, early)

    def early_copy(self) -> backups.Copy:
        with backups.EarlyCopies(str(self.root)) as early:
            early.start("auth", str(self.store))
            early.release()
            copy = early.take("auth")
        assert copy is not None
        return copy


@pytest.fixture
def run(tmp_path: Path) -> Run:
    store = tmp_path / "storage" / STORE_FILES["auth"]
    store.parent.mkdir()
    shutil.copyfile(EXAMPLES / STORE_FILES["auth"], store)
    (tmp_path / "work" / "backups").mkdir(parents=True)
    return Run(store, tmp_path / "work" / "backups")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temps(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".store-migrate-tmp-" in name]


def test_a_backup_holds_the_store_bytes_under_its_name_readable_by_root_only(run: Run) -> None:
    """Catches: a backup with other bytes, another name than the manifest's, or the store's (wider) mode and owner."""
    os.chown(run.store, SPARE_UID, SPARE_GID)
    os.chmod(run.store, 0o644)
    original = run.store.read_bytes()
    path = run.back_up(run.prepared())
    assert path == str(run.root / STAMP / workdir.backup_name("auth", STAMP, sha256(original)))
    name = workdir.BACKUP_NAME.fullmatch(os.path.basename(path))
    assert name is not None and (name["store"], name["stamp"], name["sha12"]) == ("auth", STAMP, sha256(original)[:12])
    assert Path(path).read_bytes() == original
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.geteuid())
    assert sum(run.progress) == 2 * len(original)  # copied, then read back
    assert temps(run.root / STAMP) == []


def test_a_store_that_did_not_exist_has_no_backup(run: Run) -> None:
    """Catches: an empty backup (or a crash) for a store the run creates."""
    run.store.unlink()
    assert run.back_up(run.prepared()) is None
    assert os.listdir(run.root / STAMP) == []


@pytest.mark.parametrize("early", [False, True], ids=["copied", "early copy"])
def test_a_backup_never_overwrites_an_existing_file(run: Run, early: bool) -> None:
    """Catches: a backup that replaces a file already under its name (another run's, or planted)."""
    prepared = run.prepared()
    assert prepared.before is not None
    existing = run.directory() / workdir.backup_name("auth", STAMP, prepared.before.sha256)
    existing.write_bytes(b"already here")
    copy = run.early_copy() if early else None
    with pytest.raises(FileExistsError):
        run.back_up(prepared, early=copy)
    assert existing.read_bytes() == b"already here"
    assert temps(run.directory()) == [] and temps(run.root) == []


def test_a_store_changed_after_it_was_prepared_is_not_backed_up_as_its_old_hash(run: Run) -> None:
    """Catches: a backup that is not read back, so a manifest would promise bytes nobody kept."""
    prepared = run.prepared()
    run.store.write_bytes(run.store.read_bytes().replace(b"ada@", b"eve@"))
    with pytest.raises(errors.ConcurrentWrite, match="changed on disk while the run worked"):
        run.back_up(prepared)


def test_an_early_copy_becomes_the_backup_itself(run: Run) -> None:
    """Catches: an early copy thrown away and the store copied again (or the copy left behind as a temp)."""
    original = run.store.read_bytes()
    copy = run.early_copy()
    assert (copy.sha256, copy.size) == (sha256(original), len(original))
    inode = os.stat(copy.temp).st_ino
    path = run.back_up(run.prepared(), early=copy)
    assert path is not None and os.stat(path).st_ino == inode
    assert Path(path).read_bytes() == original
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(copy.temp)


def test_an_early_copy_of_a_file_that_changed_afterwards_is_not_used(run: Run) -> None:
    """Catches: a backup made from bytes the run did not prepare (they would not be what it replaced)."""
    copy = run.early_copy()
    run.store.write_bytes(run.store.read_bytes().replace(b"ada@", b"eve@"))
    prepared = run.prepared()  # reads the newer bytes
    with pytest.raises(errors.ConcurrentWrite):
        run.back_up(prepared, early=copy)
    assert os.listdir(run.directory()) == []
    assert not os.path.exists(copy.temp)


def test_early_copies_never_taken_are_removed_with_the_directories_made_for_them(tmp_path: Path) -> None:
    """Catches: temporary copies (whole stores) or empty directories left in the work directory by a run that stopped."""
    store = tmp_path / "store.json"
    store.write_bytes(b"{}")
    backups_root = tmp_path / "work" / "backups"
    with backups.EarlyCopies(str(backups_root)) as early:
        early.start("auth", str(store))
        early.start("domain", str(tmp_path / "missing.json"))
        early.release()
        assert early.take("domain") is None  # its copy failed: the caller copies it itself
        assert os.path.isdir(backups_root)
    assert not os.path.exists(tmp_path / "work")
    (tmp_path / "work").mkdir()
    with backups.EarlyCopies(str(backups_root)) as early:
        early.start("auth", str(store))  # never released: never copied
    assert os.listdir(tmp_path / "work") == []


def test_an_identical_earlier_backup_is_linked_only_when_it_still_holds_the_bytes(run: Run) -> None:
    """Catches: a second full copy of unchanged bytes, or a link to an earlier backup that was damaged since."""
    first = run.back_up(run.prepared())
    assert first is not None
    second = run.back_up(run.prepared(), stamp=LATER)
    assert second is not None and os.path.samefile(first, second)
    assert os.stat(second).st_nlink == 2
    os.unlink(second)
    with open(first, "r+b") as damaged:  # same name, same size, other bytes
        damaged.write(b"[")
    third = run.back_up(run.prepared(), stamp=LATER)
    assert third is not None and not os.path.samefile(first, third)
    assert Path(third).read_bytes() == run.store.read_bytes()


def test_a_store_known_by_its_identity_alone_is_copied_not_linked(run: Run) -> None:
    """Catches: trusting an identity match for the backup too (only a copy's read-back hash proves the bytes)."""
    first = run.back_up(run.prepared())
    assert first is not None
    unhashed = dataclasses.replace(run.prepared(), hashed=False)
    second = run.back_up(unhashed, stamp=LATER)
    assert second is not None and not os.path.samefile(first, second)
    assert Path(second).read_bytes() == run.store.read_bytes()


def test_holds(run: Run, tmp_path: Path) -> None:
    """Catches: a check that passes for a missing file, a directory or other bytes."""
    data = run.store.read_bytes()
    assert backups.holds(str(run.store), sha256(data))
    assert not backups.holds(str(run.store), sha256(data + b" "))
    assert not backups.holds(str(tmp_path / "missing"), sha256(b""))
    assert not backups.holds(str(tmp_path), sha256(b""))


def _migrated_twice(stores: Stores) -> tuple[prepare.PreparedStore, str]:
    """A store an earlier (real) run migrated, prepared again by a rerun that knows it: its origin
    is that run's entry. Returns it and the new run's backup directory."""
    stores.write_samples()
    settings = config.resolve(stores.environ, cwd=str(stores.root))
    cmd_run.run(settings)
    known = backfill.known_results(settings)
    path = str(stores.paths["auth"])
    prepared = prepare.check_known("auth", path, path, known[path])
    assert prepared is not None and prepared.origin is not None and prepared.origin.backup_path is not None
    later = stores.work / "backups" / LATER
    later.mkdir()
    return prepared, str(later)


def test_a_rerun_carries_on_the_earlier_runs_backup_as_a_hard_link(stores: Stores) -> None:
    """Catches: a rerun backing up the migrated bytes (its manifest would roll back to them, not to the originals)."""
    prepared, later = _migrated_twice(stores)
    origin = prepared.origin
    assert origin is not None and origin.backup_path is not None and origin.before_sha256 is not None
    path = backups.write_backup(prepared, LATER, later, lambda _: None)
    assert path == os.path.join(later, workdir.backup_name("auth", LATER, origin.before_sha256))
    assert os.path.samefile(path, origin.backup_path)
    assert prepared.before is not None
    assert sha256(Path(path).read_bytes()) == origin.before_sha256 != prepared.before.sha256


def test_a_damaged_earlier_backup_is_not_carried_on(stores: Stores) -> None:
    """Catches: carrying on a backup without reading it back (a rollback would restore the damage)."""
    prepared, later = _migrated_twice(stores)
    assert prepared.origin is not None and prepared.origin.backup_path is not None
    with open(prepared.origin.backup_path, "r+b") as damaged:
        damaged.write(b"[")
    with pytest.raises(errors.RunFailed, match="no longer holds its before_sha256"):
        backups.write_backup(prepared, LATER, later, lambda _: None)
    assert os.listdir(later) == []
