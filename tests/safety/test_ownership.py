"""Run as root next to a service user: every store the tool creates, puts back or restores stays
readable by the service (the owner, group and mode of the file it replaces, else of the other
stores in its directory, else the directory's owner with mode 0600)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from conftest import RUN, Stores

from store_migrate.commands import run as cmd_run
from store_migrate.core import config
from store_migrate.errors import StoreMigrateError
from store_migrate.fs import durable

ROLLBACK = str(Path(RUN).with_name("rollback-rust-ownership-backfill.sh"))
SERVICE = 4343
"""The service user's uid (and gid): it owns the store directory and the stores."""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root to chown (CI runs as root)")


def owned(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def service_layout(stores: Stores, *, missing: tuple[str, ...] = ()) -> None:
    stores.write_samples()
    os.chown(stores.paths["auth"].parent, SERVICE, SERVICE)
    for kind, path in stores.paths.items():
        if kind in missing:
            path.unlink()
        else:
            os.chown(path, SERVICE, SERVICE)
            path.chmod(0o640)


def test_a_store_the_run_creates_belongs_to_the_service(stores: Stores) -> None:
    service_layout(stores, missing=("codex_threads",))
    stores.call(RUN, check=0)
    for path in stores.paths.values():
        assert owned(path) == (SERVICE, SERVICE, 0o640), path


def test_a_store_alone_in_its_directory_takes_the_directorys_owner(stores: Stores) -> None:
    service_layout(stores, missing=tuple(stores.paths))
    stores.call(RUN, "--allow-missing", check=0) if "--allow-missing" in stores.call(RUN, "--help").stdout \
        else stores.call(RUN, check=0)
    for path in stores.paths.values():
        assert owned(path) == (SERVICE, SERVICE, 0o600), path


def test_rollback_restores_and_recreates_with_the_services_owner(stores: Stores) -> None:
    service_layout(stores)
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    stores.paths["auth"].unlink()  # gone: recreated from its backup
    stores.call(ROLLBACK, str(manifest), check=0)
    for path in stores.paths.values():
        assert owned(path) == (SERVICE, SERVICE, 0o640), path


def test_a_failed_runs_put_back_keeps_the_owner(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    service_layout(stores)
    settings = config.resolve(environ=stores.environ, cwd=str(stores.root))
    renames = []
    original = durable.rename

    def fail_third(source: str, target: str) -> None:
        renames.append(target)
        if len(renames) == 3:  # auth and codex_threads replaced, domain fails
            raise OSError(errno.EIO, os.strerror(errno.EIO), target)
        original(source, target)

    monkeypatch.setattr(durable, "rename", fail_third)
    pre = stores.hashes()
    with pytest.raises(StoreMigrateError, match="every store holds its pre-run bytes again"):
        cmd_run.run(settings)
    assert stores.hashes() == pre
    for path in stores.paths.values():
        assert owned(path) == (SERVICE, SERVICE, 0o640), path


def test_a_store_directory_deleted_since_the_run_is_recreated_for_the_service(stores: Stores) -> None:
    service_layout(stores)
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    directory = stores.paths["auth"].parent
    for path in stores.paths.values():
        path.unlink()
    directory.rmdir()  # a wiped volume, or the service user's rm -rf
    os.chown(directory.parent, SERVICE, SERVICE)
    stores.call(ROLLBACK, str(manifest), check=0)
    assert directory.stat().st_uid == SERVICE and stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in stores.paths.values():
        assert owned(path)[:2] == (SERVICE, SERVICE), path
