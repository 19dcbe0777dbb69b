"""As a real unprivileged user: the dry run refuses exactly as the run would, permissions
included, and every permission error names the path, the user and a next step."""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, EXAMPLES, RUN, STORE_FILES, STORE_VARS, VERIFY, load_json

from store_migrate.core import access
from store_migrate.fs import durable


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @property
    def described(self) -> str:
        return f"user {self.name} (uid {self.uid})"


@pytest.fixture(scope="session")
def user() -> Iterator[User]:
    """A throwaway unprivileged user, made with useradd for this session."""
    if os.geteuid() != 0:
        pytest.skip("creating a user and switching to it needs root (CI runs the tests as root)")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is needed to make a throwaway user")
    name = f"smtest{os.getpid()}"
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    entry = pwd.getpwnam(name)
    try:
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


@dataclass
class Place:
    """Stores and a work directory under a directory the test user can reach."""

    base: Path
    storage: Path
    work: Path
    environ: dict[str, str]

    @property
    def paths(self) -> dict[str, Path]:
        return {kind: self.storage / name for kind, name in STORE_FILES.items()}

    def call(self, user: User | None, *args: str, env: dict[str, str] | None = None) -> Done:
        """A wrapper or entry point as root (a subprocess), or its entry point as `user`."""
        environ = {**self.environ, **(env or {})}
        if user is None:
            command = [str(BIN / args[0]) if not args[0].startswith("/") else args[0], *args[1:]]
            done = subprocess.run(command, env=environ, cwd=self.base, capture_output=True, text=True, check=False,
                                  timeout=120)
            return Done(done.returncode, done.stdout, done.stderr)
        return as_user(user, ENTRY_POINTS[args[0]], list(args[1:]), environ, self.base)

    def hashes(self) -> dict[str, bytes | None]:
        return {k: p.read_bytes() if p.exists() else None for k, p in self.paths.items()}


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


ENTRY_POINTS = {RUN: "backfill_app", VERIFY: "verify_app"}


def as_user(user: User, app: str, args: list[str], environ: dict[str, str], cwd: Path) -> Done:
    """The CLI entry point `app` with `args`, run by a forked child as `user` (os.setresuid), with
    this environment and working directory; its exit code and outputs. The child runs the code
    this process has loaded: the interpreter itself may sit where the user cannot reach it (a
    pyenv under /root), so every module is imported before the privileges are dropped."""
    import importlib
    import pkgutil
    import sys
    import traceback

    import store_migrate

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - left to os._exit
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                for module in pkgutil.walk_packages(store_migrate.__path__, "store_migrate."):
                    importlib.import_module(module.name)
                from store_migrate.cli import apps as cli
                from store_migrate.core import manifest

                manifest._schema_validator()  # jsonschema and what it loads
                importlib.import_module("typer._adapters")  # typer's option coercion, imported when first used
                os.environ.clear()
                os.environ.update(environ)
                os.chdir(cwd)
                os.setgroups([])
                os.setresgid(user.gid, user.gid, user.gid)
                os.setresuid(user.uid, user.uid, user.uid)
                try:
                    getattr(cli, app)(args=args, prog_name=app)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except BaseException:  # noqa: BLE001 - in the child: shown in the failing test's stderr
                traceback.print_exc()  # shown in the failing test's stderr
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return Done(os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode())


@pytest.fixture
def place() -> Iterator[Place]:
    base = Path(tempfile.mkdtemp(prefix="store-migrate-perm-"))
    base.chmod(0o755)  # pytest's own tmp_path sits in a root-only directory
    storage = base / "storage"
    storage.mkdir()
    for name in STORE_FILES.values():
        shutil.copyfile(EXAMPLES / name, storage / name)
    work = base / "work"
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("OA_", "STORE_MIGRATE_")) and key not in (*STORE_VARS.values(), "WORK_DIR")}
    environ.update({STORE_VARS[k]: str(storage / n) for k, n in STORE_FILES.items()})
    environ.update(WORK_DIR=str(work), ROOT_DIR=str(base), STORE_MIGRATE_BIN_DIR=str(BIN),
                   STORE_MIGRATE_LOG_FORMAT="json", HOME=str(base))
    try:
        yield Place(base, storage, work, environ)
    finally:
        shutil.rmtree(base)


def chown_tree(path: Path, user: User) -> None:
    for item in [path, *path.rglob("*")]:
        os.chown(item, user.uid, user.gid)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def errors(stderr: str) -> list[str]:
    """The error lines (not the JSON log events)."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def refused_alike(place: Place, user: User) -> list[str]:
    """Dry run and run, as `user`: both refuse with the same error lines, and nothing changes."""
    before = place.hashes(), listing(place.base)
    dry = place.call(user, RUN, env={"DRY_RUN": "1"})
    run = place.call(user, RUN)
    assert (dry.returncode, run.returncode) == (1, 1), (dry.stdout, dry.stderr, run.stderr)
    assert errors(dry.stderr) == errors(run.stderr)
    assert "would change" not in dry.stdout and run.stdout == ""
    assert (place.hashes(), listing(place.base)) == before
    lines = errors(run.stderr)
    assert lines[0].startswith(f"error: {user.described} cannot run the backfill here")
    assert lines[-1].startswith("  next: ")
    return lines


def test_a_store_directory_the_user_cannot_write(place: Place, user: User) -> None:
    chown_tree(place.storage, user)
    os.chown(place.storage, 0, 0)  # the files are the user's, the directory is root's (0755)
    place.work.mkdir()
    chown_tree(place.work, user)
    lines = refused_alike(place, user)
    assert f"  cannot write in directory {place.storage} (root:root (0:0), mode 0755), where the run writes the " \
           "new [auth] store, the new [codex_threads] store, the new [domain] store" in lines
    assert not any("Permission denied: " in line for line in lines)


def test_a_store_the_user_cannot_read_or_replace(place: Place, user: User) -> None:
    os.chown(place.storage, user.uid, user.gid)
    place.paths["domain"].chmod(0o600)  # root's, unreadable to the user
    place.work.mkdir()
    chown_tree(place.work, user)
    lines = refused_alike(place, user)
    assert f"  [domain] cannot read {place.paths['domain']} (root:root (0:0), mode 0600)" in lines
    assert any(line.startswith(f"  [auth] cannot replace {place.paths['auth']} (root:root (0:0), mode 0644): ")
               for line in lines)


def test_a_work_directory_the_user_cannot_write(place: Place, user: User) -> None:
    chown_tree(place.storage, user)
    (place.base / "locked").mkdir(mode=0o755)
    place.environ["WORK_DIR"] = str(place.base / "locked" / "work")
    lines = refused_alike(place, user)
    locked = place.base / "locked"
    assert f"  cannot write in directory {locked} (root:root (0:0), mode 0755), where the run writes " \
           f"{locked / 'work' / 'manifests'} (work directory), {locked / 'work' / 'backups'} (work directory)" in lines


def test_the_user_who_owns_everything_runs_and_verifies(place: Place, user: User) -> None:
    chown_tree(place.storage, user)
    os.chown(place.base, user.uid, user.gid)
    try:
        dry = place.call(user, RUN, env={"DRY_RUN": "1"})
        assert dry.returncode == 0, dry.stderr
        done = place.call(user, RUN)
        assert done.returncode == 0, done.stderr
        manifest = sorted((place.work / "manifests").glob("*.json"))[-1]
        assert all(p.stat().st_uid == user.uid for p in place.paths.values())
        assert place.call(user, VERIFY, str(manifest)).returncode == 0
    finally:
        os.chown(place.base, 0, 0)


def test_verify_as_a_user_who_cannot_read_a_backup_does_not_suggest_a_rollback(place: Place, user: User) -> None:
    for path in place.paths.values():
        path.chmod(0o644)
    done = place.call(None, RUN)
    assert done.returncode == 0, done.stderr
    manifest = sorted((place.work / "manifests").glob("*.json"))[-1]
    for directory in (place.work, place.work / "manifests"):
        directory.chmod(0o755)
    manifest.chmod(0o644)  # the backups stay root's own, 0700
    verify = place.call(user, VERIFY, str(manifest))
    assert verify.returncode == 1
    lines = errors(verify.stderr)
    auth_backup = next(e["backup_path"] for e in load_json(manifest)["stores"] if e["store"] == "auth")
    assert f"error: [auth] backup unreadable: {user.described} cannot look up {auth_backup}: a directory above " \
           "it is not searchable" in lines
    hint = next(line for line in lines if line.startswith("  next: "))
    assert "roll back" not in hint.replace("do not roll back", "") and "do not roll back for this" in hint
    # as root the same manifest verifies: it was the user's permission, not the migration
    assert place.call(None, VERIFY, str(manifest)).returncode == 0


def _as_user(user: User, action: Callable[[], Any]) -> Any:
    """`action()` in a forked child running as `user`; its result or exception (pickled back)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
            try:
                outcome: Any = action()
            except Exception as exc:  # noqa: BLE001 - sent to the parent to assert on
                outcome = exc
            os.write(write_fd, pickle.dumps(outcome))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def test_a_permission_error_met_while_working_names_the_directory_the_user_and_a_next_step(
    place: Place, user: User
) -> None:
    def write_a_temp_file() -> str:
        try:
            durable.write_temp(str(place.storage), "rust-auth-store.json", b"{}", 0o600, None)
        except PermissionError as exc:
            denied = access.explain(exc)
            return f"{denied.message}\n{denied.hint}"
        return "written"

    message, hint = _as_user(user, write_a_temp_file).split("\n")
    assert message == (f"{user.described} cannot write in directory {place.storage} (root:root (0:0), mode 0755) "
                       "(a temporary file for rust-auth-store.json)")
    assert hint.startswith(f"give {user.described} access to {place.storage}")
