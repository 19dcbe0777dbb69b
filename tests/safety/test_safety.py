"""Nothing is ever lost: faults injected into every write, kills, a full disk, a second operator,
a live writer, symlinks. Each test breaks something on purpose and checks the invariants:
every store holds exactly its pre-run or its post-run bytes, no temporary file is left behind,
and a rollback returns every store to its pre-run bytes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, EXAMPLES, PROJECT, RUN, STORE_FILES, Stores, load_json, log_events, sha256

from store_migrate.commands import backups
from store_migrate.commands import rollback as cmd_rollback
from store_migrate.commands import run as cmd_run
from store_migrate.core import config
from store_migrate.core.manifest import COMPLETE, PENDING, REVERTED
from store_migrate.errors import ConcurrentWrite, StoreMigrateError
from store_migrate.fs import durable, lock

sys.path.insert(0, str(PROJECT / "bench"))
import generate  # noqa: E402


class FakeClock:
    """A clock that moves one second per call, so back-to-back runs never wait for the next second."""

    def __init__(self) -> None:
        self.now = datetime(2026, 2, 22, 8, 55, 2, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def settings_for(stores: Stores) -> config.Settings:
    return config.resolve(environ=stores.environ, cwd=str(stores.root))


def temp_files(*directories: Path) -> list[str]:
    found = []
    for directory in directories:
        for root, _, files in os.walk(directory):
            found += [os.path.join(root, f) for f in files if durable.TEMP_MARK in f]
    return found


def assert_each_store_is_pre_or_post(stores: Stores, pre: dict[str, str | None], post: dict[str, str | None]) -> None:
    now = stores.hashes()
    for kind in STORE_FILES:
        assert now[kind] in (pre[kind], post[kind]), f"{kind} holds bytes that are neither pre-run nor post-run"


class Faults:
    """Wraps the project's own file-operation functions; the N-th call fails with an errno."""

    OPERATIONS = ("write_all", "fsync", "rename", "link", "unlink")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.fail_at: int | None = None
        self.code = errno.EIO
        self.failed_operation: str | None = None
        for name in self.OPERATIONS:
            monkeypatch.setattr(durable, name, self._wrap(name, getattr(durable, name)))

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            self.calls += 1
            if self.calls == self.fail_at:
                self.failed_operation = name
                path = args[-1] if args and isinstance(args[-1], str) else None
                raise OSError(self.code, os.strerror(self.code), path)
            return original(*args)

        return wrapper

    def arm(self, n: int | None, code: int = errno.EIO) -> None:
        self.calls, self.fail_at, self.code, self.failed_operation = 0, n, code, None


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults(monkeypatch)


def fresh(stores: Stores) -> None:
    """The samples for auth and domain; no codex store (so the run creates one)."""
    for path in stores.paths.values():
        if path.exists():
            path.unlink()
    shutil.rmtree(stores.work, ignore_errors=True)
    shutil.copyfile(EXAMPLES / STORE_FILES["auth"], stores.paths["auth"])
    shutil.copyfile(EXAMPLES / STORE_FILES["domain"], stores.paths["domain"])


def post_run_hashes(stores: Stores, clock: FakeClock) -> tuple[dict[str, str | None], dict[str, str | None], int]:
    fresh(stores)
    pre = stores.hashes()
    cmd_run.run(settings_for(stores), clock=clock)
    return pre, stores.hashes(), 0


def test_fault_injection_during_run_never_loses_data(stores: Stores, faults: Faults) -> None:
    clock = FakeClock()
    pre, post, _ = post_run_hashes(stores, clock)
    fresh(stores)
    faults.arm(None)
    cmd_run.run(settings_for(stores), clock=clock)
    total = faults.calls
    assert total >= 25, "the run performs the writes, fsyncs, links and renames it should"
    for code in (errno.EIO, errno.ENOSPC):
        for n in range(1, total + 1):
            fresh(stores)
            faults.arm(n, code)
            with pytest.raises((StoreMigrateError, OSError)):
                cmd_run.run(settings_for(stores), clock=clock)
            faults.arm(None)
            where = f"{os.strerror(code)} at call {n} ({faults.failed_operation})"
            assert_each_store_is_pre_or_post(stores, pre, post)
            assert temp_files(stores.root) == [], where
            manifests = stores.manifests()
            if manifests:
                status = load_json(manifests[-1])["status"]
                assert status in (PENDING, REVERTED, COMPLETE), where
                if status == REVERTED:
                    assert stores.hashes() == pre, where
                if status == COMPLETE:  # only the fsync after the manifest's final rename failed
                    assert stores.hashes() == post, where
                cmd_rollback.rollback(str(manifests[-1]))
                assert stores.hashes() == pre, where
            rerun = cmd_run.run(settings_for(stores), clock=clock)
            assert stores.hashes() == post and rerun.manifest.status == COMPLETE, where
            cmd_rollback.rollback(rerun.manifest_path)
            assert stores.hashes() == pre, where


def test_fault_injection_during_rollback_never_loses_data(stores: Stores, faults: Faults) -> None:
    clock = FakeClock()
    pre, post, _ = post_run_hashes(stores, clock)
    fresh(stores)
    result = cmd_run.run(settings_for(stores), clock=clock)
    faults.arm(None)
    cmd_rollback.rollback(result.manifest_path)
    total = faults.calls
    assert total >= 8
    for code in (errno.EIO, errno.ENOSPC):
        for n in range(1, total + 1):
            fresh(stores)
            result = cmd_run.run(settings_for(stores), clock=clock)
            faults.arm(n, code)
            with pytest.raises((StoreMigrateError, OSError)):
                cmd_rollback.rollback(result.manifest_path)
            faults.arm(None)
            assert_each_store_is_pre_or_post(stores, pre, post)
            assert temp_files(stores.root) == []
            cmd_rollback.rollback(result.manifest_path)
            assert stores.hashes() == pre


@pytest.fixture(scope="module")
def big_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stores of tens of megabytes, generated once for the module."""
    directory = tmp_path_factory.mktemp("big")
    rng = generate.random.Random(7)
    for kind, make, megabytes in (("auth", generate.auth, 4), ("codex_threads", generate.codex, 20),
                                  ("domain", generate.domain, 4)):
        (directory / STORE_FILES[kind]).write_text(
            json.dumps(make(int(megabytes * 1e6), rng), separators=(",", ":"), ensure_ascii=False))
    return directory


def copy_big(big: Path, stores: Stores) -> None:
    shutil.rmtree(stores.work, ignore_errors=True)
    for kind, name in STORE_FILES.items():
        shutil.copyfile(big / name, stores.paths[kind])


def spawn_run(stores: Stores, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "store-migrate"), "run", *extra], env=stores.environ, cwd=stores.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed_clean_run(stores: Stores, big_stores: Path) -> tuple[dict[str, str | None], dict[str, str | None], float]:
    """The big stores copied in and one undisturbed run: the hashes before and after, and how long
    it took (the moments to interrupt later runs at are spread over it)."""
    copy_big(big_stores, stores)
    pre = stores.hashes()
    started = time.monotonic()
    assert spawn_run(stores).wait() == 0
    duration = time.monotonic() - started
    return pre, stores.hashes(), duration


def test_sigkill_at_many_moments_never_loses_data(stores: Stores, big_stores: Path) -> None:
    pre, post, duration = timed_clean_run(stores, big_stores)
    moments = [duration * i / 10 for i in range(1, 16)]  # up to 1.5x: some kills land after the end
    outcomes = []
    for moment in moments:
        copy_big(big_stores, stores)
        process = spawn_run(stores)
        time.sleep(moment)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert_each_store_is_pre_or_post(stores, pre, post)
        manifests = stores.manifests()
        outcomes.append(load_json(manifests[-1]).get("status") if manifests else None)
        if manifests:
            stores.call("store-migrate", "rollback", str(manifests[-1]), check=0)
        assert stores.hashes() == pre, f"rollback after a kill at {moment:.2f}s"
        stores.call("store-migrate", "run", check=0)  # the next run cleans up and succeeds
        assert temp_files(stores.root) == []
        assert stores.hashes() == post
    assert None in outcomes and COMPLETE in outcomes, f"kills should land before and after the end: {outcomes}"


def test_two_concurrent_runs_never_interleave(stores: Stores, big_stores: Path) -> None:
    copy_big(big_stores, stores)
    pre = stores.hashes()
    first, second = spawn_run(stores), spawn_run(stores)
    assert first.wait() == 0 and second.wait() == 0, (first.stderr.read() if first.stderr else "")
    (only,) = stores.manifests()  # the second found the stores migrated: nothing to change, nothing written
    assert first.stdout is not None and second.stdout is not None
    assert first.stdout.read() == second.stdout.read()
    entries = load_json(only)["stores"]
    assert all(e["changed"] for e in entries) and [e["before_sha256"] for e in entries] == list(pre.values())


def test_lock_names_the_holder_and_is_freed_when_the_holder_dies(stores: Stores) -> None:
    stores.write_samples()
    paths = [str(p) for p in stores.paths.values()]
    with lock.locked(paths, timeout=0):
        done = stores.call("store-migrate", "run", "--lock-timeout", "0.3", check=1)
        assert f"is locked by pid {os.getpid()}" in done.stderr
        assert "--lock-timeout" in done.stderr
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom store_migrate import logs\nfrom store_migrate.fs import lock\nlogs.configure('json', quiet=True)\n"
         "with lock.locked(sys.argv[1:], 0):\n    print('held', flush=True)\n    time.sleep(120)\n", *paths],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    waiting = spawn_run(stores, "--lock-timeout", "60")
    time.sleep(0.5)
    assert waiting.poll() is None, "the run waits while the lock is held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert waiting.wait(timeout=30) == 0
    assert not any(name.endswith(".lock") for name in os.listdir(stores.paths["auth"].parent))


def test_a_store_written_between_read_and_replace_stops_the_run(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    stores.write_samples()
    pre = stores.hashes()
    service_bytes = b'{"shouts": [{"id": 99}], "written": "by the service"}'
    original = durable.create_new

    def backup_then_service_writes(path: str, data: bytes, **kw: Any) -> None:
        original(path, data, **kw)
        if "manifests" in path:  # the service writes just before the stores are replaced
            stores.paths["domain"].write_bytes(service_bytes)

    monkeypatch.setattr(durable, "create_new", backup_then_service_writes)
    with pytest.raises(ConcurrentWrite) as stopped:
        cmd_run.run(settings_for(stores), clock=FakeClock())
    assert "changed on disk while the run worked" in str(stopped.value)
    assert "were put back" in str(stopped.value)
    assert stores.paths["domain"].read_bytes() == service_bytes, "the newer data is kept"
    assert stores.hashes()["auth"] == pre["auth"] and stores.hashes()["codex_threads"] == pre["codex_threads"]
    assert load_json(stores.newest_manifest())["status"] == REVERTED


def test_a_live_writer_thread_stops_the_run_and_nothing_is_lost(stores: Stores, big_stores: Path) -> None:
    copy_big(big_stores, stores)
    pre = stores.hashes()
    stop = threading.Event()
    written: list[bytes] = []

    def service() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body = json.dumps({"threads": {}, "messages_by_thread": {}, "write": n}).encode()
            temp = stores.paths["codex_threads"].with_name("service-writes-here.tmp")
            temp.write_bytes(body)  # the service's own temp file + rename, as STORES.md describes
            os.replace(temp, stores.paths["codex_threads"])
            written.append(body)
            time.sleep(0.005)

    writer = threading.Thread(target=service)
    writer.start()
    try:
        time.sleep(0.05)
        with pytest.raises(ConcurrentWrite):
            cmd_run.run(settings_for(stores), clock=FakeClock())
    finally:
        stop.set()
        writer.join()
    assert stores.paths["codex_threads"].read_bytes() == written[-1], "the service's last write is kept"
    assert stores.hashes()["auth"] == pre["auth"] and stores.hashes()["domain"] == pre["domain"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[Path, str], None]]:
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(path)

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize(
    ("full", "size", "codex_bytes"),
    [("work", "64k", 300_000), ("storage", "1m", 560_000)],
    ids=["work-directory", "store-directory"],
)
def test_a_full_disk_fails_before_any_store_is_replaced(
    stores: Stores, tmpfs: Callable[[Path, str], None], full: str, size: str, codex_bytes: int
) -> None:
    """Backups (work directory) and the new bytes (beside each store) are written before any
    store is replaced, so a full disk in either place stops the run with every store intact."""
    tmpfs(stores.work if full == "work" else stores.paths["auth"].parent, size)
    stores.write_samples()
    stores.write("codex_threads", json.dumps(generate.codex(codex_bytes, generate.random.Random(5)),
                                             separators=(",", ":")))
    pre = stores.hashes()
    done = stores.call(RUN, check=1)
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert stores.hashes() == pre
    assert temp_files(stores.root) == []
    assert stores.manifests() == []


def test_symlinked_store_is_migrated_at_its_target_and_stays_a_link(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    real = tmp_path / "real-domain.json"
    stores.paths["domain"].rename(real)
    stores.paths["domain"].symlink_to(real)
    original = sha256(real)
    stores.call(RUN, check=0)
    assert stores.paths["domain"].is_symlink() and os.readlink(stores.paths["domain"]) == str(real)
    assert sha256(real) != original
    stores.call("store-migrate", "rollback", str(stores.newest_manifest()), check=0)
    assert stores.paths["domain"].is_symlink() and sha256(real) == original


def test_rollback_refuses_a_store_path_that_is_not_a_regular_file(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    document = load_json(manifest)
    document["stores"][1]["path"] = str(stores.root)
    manifest.write_text(json.dumps(document))
    migrated = stores.hashes()
    done = stores.call("store-migrate", "rollback", str(manifest), check=1)
    assert f"{stores.root} is a directory, not a regular file" in done.stderr and "Traceback" not in done.stderr
    assert stores.hashes() == migrated


def test_leftover_temp_files_of_a_dead_run_are_removed(stores: Stores) -> None:
    stores.write_samples()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    leftover = stores.paths["auth"].parent / f".{STORE_FILES['auth']}{durable.TEMP_MARK}{pid}-0123abcd"
    leftover.write_text("half written")
    in_work_dir = stores.work / "manifests" / f".x.json{durable.TEMP_MARK}{pid}-0123abcd"
    alive = stores.work / "manifests" / f".y.json{durable.TEMP_MARK}{os.getpid()}-0123abcd"
    in_work_dir.parent.mkdir(parents=True)
    in_work_dir.write_text("half written")
    alive.write_text("being written by a live process (another run sharing WORK_DIR)")
    done = stores.call(RUN, check=0)
    assert not leftover.exists() and not in_work_dir.exists() and alive.exists()
    assert str(leftover) in done.stderr  # temp.removed event
    alive.unlink()


def test_new_files_are_private(stores: Stores) -> None:
    old = os.umask(0)
    try:
        stores.call(RUN, "--allow-missing", check=0)
    finally:
        os.umask(old)
    for path in [*stores.paths.values(), stores.newest_manifest()]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), path
    for directory in (stores.work, stores.work / "manifests", stores.work / "backups"):
        assert oct(directory.stat().st_mode & 0o777) == oct(0o700), directory


def test_big_stores_are_backed_up_while_workers_prepare_them(stores: Stores, big_stores: Path) -> None:
    copy_big(big_stores, stores)
    pre = stores.hashes()
    done = stores.call("store-migrate", "run", check=0)
    events = [e for e in log_events(done.stderr) if e["event"] == "backup.written"]
    assert sorted(e["store"] for e in events if e["early"]) == sorted(STORE_FILES)
    entries = {e["store"]: e for e in load_json(stores.newest_manifest())["stores"]}
    for kind in STORE_FILES:
        assert sha256(Path(entries[kind]["backup_path"])) == pre[kind] == entries[kind]["before_sha256"]
    assert temp_files(stores.root) == []
    stores.call("store-migrate", "verify", "--strict", str(stores.newest_manifest()), check=0)


def test_a_store_written_between_its_early_copy_and_its_read_stops_the_run(
    stores: Stores, big_stores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_big(big_stores, stores)
    pre = stores.hashes()
    service_bytes = b'{"shouts": [], "written": "by the service after the copy"}'

    def copy_then_service_writes(self: backups.EarlyCopies, store: str, target: str) -> None:
        durable.ensure_dir(self.directory)
        copy = self._copy(store, target)  # synchronously, so the write lands before the workers read
        if store == "domain":
            stores.paths["domain"].write_bytes(service_bytes)
        done: Future[backups.Copy] = Future()
        done.set_result(copy)
        self._copies[store] = done

    monkeypatch.setattr(backups.EarlyCopies, "start", copy_then_service_writes)
    with pytest.raises(ConcurrentWrite) as stopped:
        cmd_run.run(settings_for(stores), clock=FakeClock())
    assert "changed on disk while the run worked" in str(stopped.value)
    assert stores.paths["domain"].read_bytes() == service_bytes, "the newer data is kept"
    assert stores.hashes()["auth"] == pre["auth"] and stores.hashes()["codex_threads"] == pre["codex_threads"]
    assert temp_files(stores.root) == []
    assert not (stores.work / "manifests").exists() or not list((stores.work / "manifests").iterdir())


def test_big_stores_are_written_exactly_as_the_general_path_would(stores: Stores, big_stores: Path) -> None:
    """The one-pass typed decode and the pieces (batches sized as they go) on stores of tens of
    megabytes give the bytes of the plain reference: parse, transform, encode in one go."""
    from store_migrate.core import transform
    from store_migrate.core.stores import store_kind
    from store_migrate.readable import jsonio

    copy_big(big_stores, stores)
    originals = {kind: stores.paths[kind].read_bytes() for kind in STORE_FILES}
    done = stores.call("store-migrate", "run", check=0)
    typed = {e["store"]: e["typed"] for e in log_events(done.stderr) if e["event"] == "store.validated"}
    assert typed == {kind: True for kind in STORE_FILES}, "these stores take the one-pass path"
    for kind, original in originals.items():
        expected = jsonio.encode(transform.backfill(store_kind(kind), jsonio.decode(original)).value)
        assert stores.paths[kind].read_bytes() == expected, kind
