"""A store's directory swapped while a command works: the service user owns the directory above
the stores, so it can rename the store directory away and put a link to a root-only directory in
its place at any moment. Whatever the timing, nothing may be written into that directory: a
command writes only into the directory it checked (durable.held), or refuses.

These run as root (as CI does); the service user is a uid that owns nothing else."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RUN, STORE_FILES, Stores, load_json, sha256

from store_migrate.fs import durable, ondisk

ROLLBACK = str(Path(RUN).with_name("rollback-rust-ownership-backfill.sh"))
OTHER = 4242

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacker is another uid: needs root (as CI runs)")


@pytest.fixture
def service(stores: Stores) -> Iterator[Stores]:
    """The stores in `<svc>/storage`, where the service user owns `<svc>` and `storage`; the work
    directory stays root's, outside it. `<svc>` is outside pytest's temporary directories, which
    only root may enter."""
    base = Path(tempfile.mkdtemp(prefix="store-migrate-swap-"))
    base.chmod(0o711)
    svc = base / "svc"
    storage = svc / "storage"
    storage.mkdir(parents=True)
    for path in (svc, storage):
        os.chown(path, OTHER, OTHER)
    stores.paths = {kind: storage / name for kind, name in STORE_FILES.items()}
    stores.environ.update({var: str(stores.paths[kind]) for kind, var in
                           (("auth", "AUTH_STORE_PATH"), ("codex_threads", "CODEX_THREAD_STORE_PATH"),
                            ("domain", "DOMAIN_STORE_PATH"))})
    stores.write_samples()
    for path in stores.paths.values():
        os.chown(path, OTHER, OTHER)
    yield stores
    shutil.rmtree(base)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    directory = tmp_path / "root-only"
    directory.mkdir(mode=0o700)
    return directory


def swap(storage: Path, secret: Path) -> None:
    """What the attacker does: the store directory renamed away, a link to `secret` in its place."""
    storage.rename(storage.with_name("storage.old"))
    storage.symlink_to(secret)
    os.lchown(storage, OTHER, OTHER)


def test_a_directory_swapped_after_it_was_checked_is_never_written(service: Stores, secret: Path) -> None:
    storage = service.paths["auth"].parent
    found = ondisk.locate(str(service.paths["auth"]), "store path")
    swap(storage, secret)
    with pytest.raises(ondisk.UnsafeStorePath, match="was replaced after it was checked"), \
            durable.held([found], create=True):
        pass
    assert list(secret.iterdir()) == []


def test_once_held_a_swap_no_longer_redirects_writes(service: Stores, secret: Path) -> None:
    storage = service.paths["auth"].parent
    found = ondisk.locate(str(service.paths["auth"]), "store path")
    with durable.held([found], create=True) as (held,):
        swap(storage, secret)
        durable.atomic_replace(held.at, b"{}")
        assert ondisk.identity(held.at) == ondisk.identity(str(storage.with_name("storage.old") / found.target.split("/")[-1]))
    assert list(secret.iterdir()) == []
    assert (storage.with_name("storage.old") / STORE_FILES["auth"]).read_bytes() == b"{}"


def test_missing_directories_are_made_under_the_checked_one_never_through_a_planted_link(
    service: Stores, secret: Path
) -> None:
    storage = service.paths["auth"].parent
    path = storage / "new" / "deeper" / "auth.json"
    found = ondisk.locate(str(path), "store path")
    (storage / "new").symlink_to(secret)  # planted after the check, in place of a missing directory
    with pytest.raises(ondisk.UnsafeStorePath, match="became a link"), durable.held([found], create=True):
        pass
    assert list(secret.iterdir()) == []
    (storage / "new").unlink()
    with durable.held([found], create=True) as (held,):
        durable.atomic_replace(held.at, b"{}")
    assert path.read_bytes() == b"{}"
    for made in (storage / "new", storage / "new" / "deeper"):
        st = made.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (OTHER, OTHER, 0o700)


def test_a_dry_run_creates_no_directory(service: Stores) -> None:
    path = service.paths["auth"].parent / "new" / "auth.json"
    found = ondisk.locate(str(path), "store path")
    with durable.held([found], create=False) as (held,):
        assert held.at == str(path)
    assert not path.parent.exists()


def swap_on_first_open(storage: Path, secret: Path) -> int:
    """Fork the service user, who swaps the store directory (`swap`) the moment anything opens it
    or a file in it: the first open comes once a command has checked the paths (the lock, or
    the first read). Its pid; it exits after the swap."""
    ready_r, ready_w = os.pipe()
    attacker = os.fork()
    if attacker == 0:
        try:
            os.close(ready_r)
            os.setresgid(OTHER, OTHER, OTHER)
            os.setresuid(OTHER, OTHER, OTHER)
            libc = ctypes.CDLL(None, use_errno=True)
            watch = libc.inotify_init1(0)
            if watch < 0 or libc.inotify_add_watch(watch, bytes(storage), _IN_OPEN) < 0:
                os._exit(2)
            os.write(ready_w, b"!")
            os.read(watch, 4096)
            swap(storage, secret)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"!", "the attacker could not watch the store directory"
    os.close(ready_r)
    return attacker


_IN_OPEN = 0x20


def restore_directory(storage: Path) -> None:
    if storage.is_symlink():
        storage.unlink()
        storage.with_name("storage.old").rename(storage)


def test_a_run_whose_store_directory_is_swapped_after_the_checks_writes_nothing_there(
    service: Stores, secret: Path
) -> None:
    storage = service.paths["auth"].parent
    attacker = swap_on_first_open(storage, secret)
    done = service.call(RUN)
    os.waitpid(attacker, 0)
    assert list(secret.iterdir()) == []
    checked = storage.with_name("storage.old")  # the directory the run checked, renamed away
    assert done_in(done, checked) or refused(done)
    assert service.manifests() == [] or all(
        entry["after_sha256"] == sha256(checked / Path(entry["path"]).name)
        for entry in load_json(service.newest_manifest())["stores"]
    )


def test_a_rollback_whose_store_directory_is_swapped_after_the_checks_writes_nothing_there(
    service: Stores, secret: Path
) -> None:
    service.call(RUN, check=0)
    storage = service.paths["auth"].parent
    service.paths["auth"].unlink()  # the service user removed it: the rollback must create it
    attacker = swap_on_first_open(storage, secret)
    done = service.call(ROLLBACK, str(service.newest_manifest()))
    os.waitpid(attacker, 0)
    assert list(secret.iterdir()) == []
    checked = storage.with_name("storage.old")
    if not done_in(done, checked):
        assert refused(done)
        restore_directory(storage)
        service.call(ROLLBACK, str(service.newest_manifest()), check=0)
        checked = storage
    assert (checked / STORE_FILES["auth"]).exists()


def done_in(done: subprocess.CompletedProcess[str], checked: Path) -> bool:
    """The command went ahead: its writes went into `checked`, the directory it had checked."""
    assert "Traceback" not in done.stderr
    return done.returncode == 0 and all((checked / name).exists() for name in STORE_FILES.values())


def refused(done: subprocess.CompletedProcess[str]) -> bool:
    """Refused with a clear reason: the swap came after the checks (the held directory is not the
    checked one), or before them (the link is not one to follow)."""
    assert done.returncode == 1, done.stderr
    assert "was replaced after it was checked" in done.stderr or "refusing to follow the symbolic link" in done.stderr
    return True


@pytest.fixture
def swapping(service: Stores, secret: Path) -> Iterator[None]:
    """The service user swapping the store directory back and forth as fast as it can."""
    storage = service.paths["auth"].parent
    old = storage.with_name("storage.old")
    attacker = os.fork()
    if attacker == 0:  # the child: the service user, swapping until killed
        try:
            os.setresgid(OTHER, OTHER, OTHER)
            os.setresuid(OTHER, OTHER, OTHER)
            while True:
                with contextlib.suppress(FileNotFoundError, FileExistsError):
                    os.rename(storage, old)
                    os.symlink(secret, storage)
                    time.sleep(0.0005)
                    os.unlink(storage)
                    os.rename(old, storage)
                    time.sleep(0.0005)
        finally:
            os._exit(0)
    try:
        time.sleep(0.2)
        yield
    finally:
        os.kill(attacker, signal.SIGKILL)
        os.waitpid(attacker, 0)
        if storage.is_symlink():
            storage.unlink()
        if not storage.exists():
            storage.with_name("storage.old").rename(storage)


def test_runs_and_rollbacks_under_a_swapping_service_user_never_write_into_its_link_target(
    service: Stores, secret: Path, swapping: None
) -> None:
    outcomes = set()
    for _ in range(6):
        done = service.call(RUN)
        assert "Traceback" not in done.stderr, done.stderr
        outcomes.add(done.returncode)
        assert list(secret.iterdir()) == []
        for manifest in service.manifests():
            done = service.call(ROLLBACK, str(manifest))
            assert "Traceback" not in done.stderr, done.stderr
            assert list(secret.iterdir()) == []
            manifest.unlink()
    assert outcomes <= {0, 1}
