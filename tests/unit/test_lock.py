"""lock.py on its own: flock(2) on each store's directory, between real processes (os.fork).

A holder is a forked child that takes the lock, says so through a pipe and keeps it until told
to let go (or is killed); the test process then tries the lock itself.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# One line per module: the modules are moving into packages, and a script rewrites these lines.
# isort: off
from store_migrate import errors
from store_migrate.fs import lock
# isort: on


@dataclass
class Child:
    pid: int
    release_w: int
    reaped: bool = False

    def release(self) -> int:
        """Tell the child to leave its `with` block and exit; its exit code."""
        os.write(self.release_w, b"x")
        return self.wait()

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        os.close(self.release_w)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait()


Spawn = Callable[[Callable[[Callable[[], None]], None]], Child]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Fork a child running `body(ready)`, where `ready()` tells the parent (which waits for it)
    that the child holds what it should, then waits to be released. Exit code 0 when `body`
    returns, 1 when it raises. Children still alive at teardown are killed."""
    children: list[Child] = []

    def start(body: Callable[[Callable[[], None]], None]) -> Child:
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(ready_r)
                os.close(release_w)

                def ready() -> None:
                    os.write(ready_w, b"ready")
                    os.read(release_r, 1)

                body(ready)
                code = 0
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(release_r)
        child = Child(pid, release_w)
        children.append(child)
        said = os.read(ready_r, 5)  # blocks until the child is ready, or EOF when it exits first
        os.close(ready_r)
        assert said == b"ready", "the child exited before it was ready"
        return child

    yield start
    for child in children:
        if not child.reaped:
            child.kill()


def holding(paths: list[str], timeout: float = 5.0) -> Callable[[Callable[[], None]], None]:
    def body(ready: Callable[[], None]) -> None:
        with lock.locked(paths, timeout):
            ready()

    return body


def free(paths: list[str]) -> bool:
    """Whether this process can take the lock of `paths` right now (timeout 0: one try)."""
    try:
        with lock.locked(paths, 0):
            return True
    except errors.LockTimeout:
        return False


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    """Two store directories, `a` sorting before `b`, each with a store file."""
    a, b = tmp_path / "a", tmp_path / "b"
    for directory in (a, b):
        directory.mkdir()
        (directory / "store.json").write_text("{}")
    return os.path.realpath(a), os.path.realpath(b)


def test_a_second_process_waits_then_times_out_naming_the_holder(spawn: Spawn, dirs: tuple[str, str]) -> None:
    """Catches: no exclusion between processes, a wait that does not wait, or an error naming no holder."""
    a, _ = dirs
    holder = spawn(holding([f"{a}/store.json"]))
    started = time.monotonic()
    with pytest.raises(errors.LockTimeout) as raised, lock.locked([f"{a}/other-store.json"], 0.3):
        pytest.fail("took a lock another process holds")
    waited = time.monotonic() - started
    assert waited >= 0.3
    assert re.search(rf"\bpid {holder.pid}\b", raised.value.message), raised.value.message
    assert f"{a}/other-store.json" in raised.value.message
    assert "gave up after 0.3s" in raised.value.message
    assert raised.value.directory == a
    assert holder.release() == 0


def test_a_waiting_process_gets_the_lock_once_the_holder_lets_go(spawn: Spawn, dirs: tuple[str, str]) -> None:
    """Catches: a waiter that gives up at the first refusal instead of polling until its timeout."""
    a, _ = dirs
    holder = spawn(holding([f"{a}/store.json"]))
    letting_go = threading.Timer(0.3, holder.release)
    letting_go.start()
    started = time.monotonic()
    try:
        with lock.locked([f"{a}/store.json"], 10):
            waited = time.monotonic() - started
    finally:
        letting_go.join()
    assert 0.25 <= waited < 10


def test_stores_in_different_directories_do_not_exclude_each_other(spawn: Spawn, dirs: tuple[str, str]) -> None:
    """Catches: one global lock (or a lock on a common parent) serialising unrelated stores."""
    a, b = dirs
    holder = spawn(holding([f"{a}/store.json"]))
    assert free([f"{b}/store.json"])
    assert not free([f"{a}/store.json"])
    assert holder.release() == 0
    assert free([f"{a}/store.json"])


def test_every_path_to_a_store_shares_its_lock(spawn: Spawn, dirs: tuple[str, str], tmp_path: Path) -> None:
    """Catches: a lock keyed on the path as given, which a symbolic link to the directory would bypass."""
    a, _ = dirs
    (tmp_path / "link").symlink_to(a)
    holder = spawn(holding([str(tmp_path / "link" / "store.json")]))
    assert not free([f"{a}/store.json"])
    assert holder.release() == 0


def test_stores_sharing_a_directory_take_its_lock_once(dirs: tuple[str, str], tmp_path: Path) -> None:
    """Catches: a second flock on the same directory from the same call, which would wait on itself."""
    a, b = dirs
    (tmp_path / "link").symlink_to(a)
    with lock.locked([f"{a}/store.json", f"{a}/other.json", str(tmp_path / "link" / "third.json"), f"{b}/x"], 0):
        pass


def test_locks_are_taken_in_sorted_order_whatever_the_order_given(spawn: Spawn, dirs: tuple[str, str]) -> None:
    """Catches: taking the directories in the order given, which holds `b` while waiting for `a`
    (and deadlocks against a process taking them the other way round)."""
    a, b = dirs
    holder = spawn(holding([f"{a}/store.json"]))

    def both(ready: Callable[[], None]) -> None:
        ready()  # started; released at once by the parent's write below
        with lock.locked([f"{b}/store.json", f"{a}/store.json"], 10):
            pass

    waiter = spawn(both)
    os.write(waiter.release_w, b"x")
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # while the waiter waits for `a`, it holds nothing
        assert free([f"{b}/store.json"]), "the waiter took b before a"
        assert os.waitpid(waiter.pid, os.WNOHANG) == (0, 0), "the waiter did not wait for a"
        time.sleep(0.02)
    assert holder.release() == 0
    assert waiter.wait() == 0


def test_two_processes_taking_two_directories_in_opposite_orders_never_deadlock(
    spawn: Spawn, dirs: tuple[str, str]
) -> None:
    """Catches: a lock order that depends on the order given (each would hold one and time out on the other)."""
    a, b = dirs

    def loop(paths: list[str]) -> Callable[[Callable[[], None]], None]:
        def body(ready: Callable[[], None]) -> None:
            ready()
            for _ in range(30):
                with lock.locked(paths, 5):
                    time.sleep(0.002)

        return body

    forward = spawn(loop([f"{a}/store.json", f"{b}/store.json"]))
    backward = spawn(loop([f"{b}/store.json", f"{a}/store.json"]))
    os.write(forward.release_w, b"x")
    os.write(backward.release_w, b"x")
    assert forward.wait() == 0
    assert backward.wait() == 0


def test_the_lock_goes_with_a_holder_killed_by_sigkill(spawn: Spawn, dirs: tuple[str, str]) -> None:
    """Catches: a lock that outlives its holder (a lock file or a stale marker to clear by hand)."""
    a, _ = dirs
    holder = spawn(holding([f"{a}/store.json"]))
    assert not free([f"{a}/store.json"])
    holder.kill()
    assert free([f"{a}/store.json"])


def test_the_lock_is_released_when_the_block_raises(dirs: tuple[str, str]) -> None:
    """Catches: a descriptor left open (lock still held) when the locked block fails."""
    a, _ = dirs
    with pytest.raises(RuntimeError), lock.locked([f"{a}/store.json"], 0):
        raise RuntimeError("fails inside the lock")
    assert free([f"{a}/store.json"])


def test_no_file_is_ever_created(dirs: tuple[str, str], tmp_path: Path) -> None:
    """Catches: a lock file (or one created and removed again) in the service's directory."""
    a, b = dirs

    def listing() -> list[tuple[str, list[str], list[str], int]]:
        return [(d, sorted(ds), sorted(fs), os.stat(d).st_mtime_ns) for d, ds, fs in sorted(os.walk(tmp_path))]

    before = listing()
    with lock.locked([f"{a}/store.json", f"{b}/missing/deeper/store.json"], 0):
        assert listing() == before
        # a second taker (a new descriptor: flock excludes it even in this process) waits in vain
        with pytest.raises(errors.LockTimeout), lock.locked([f"{a}/store.json"], 0.1):
            pass
        assert listing() == before
    assert listing() == before


def test_lock_dir_for_an_existing_store_is_its_directory(tmp_path: Path) -> None:
    """Catches: locking the file itself (replaced by every run, so two runs would lock different inodes)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "store.json").write_text("{}")
    assert lock.lock_dir_for(str(tmp_path / "d" / "store.json")) == os.path.realpath(tmp_path / "d")


@pytest.mark.parametrize("missing", ["store.json", "x/store.json", "x/y/z/store.json"])
def test_lock_dir_for_a_missing_store_is_its_nearest_existing_ancestor(tmp_path: Path, missing: str) -> None:
    """Catches: failing (or creating directories) for a store whose directory a run will create."""
    (tmp_path / "d").mkdir()
    assert lock.lock_dir_for(str(tmp_path / "d" / missing)) == os.path.realpath(tmp_path / "d")


def test_lock_dir_for_resolves_links_to_directories_and_to_the_store(tmp_path: Path) -> None:
    """Catches: a lock on the link's directory, which another path to the same store would not share."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "store.json").symlink_to(real / "sub" / "store.json")
    resolved = os.path.realpath(real)
    assert lock.lock_dir_for(str(tmp_path / "link" / "store.json")) == resolved
    assert lock.lock_dir_for(str(tmp_path / "link" / "missing" / "store.json")) == resolved
    assert lock.lock_dir_for(str(tmp_path / "elsewhere" / "store.json")) == os.path.join(resolved, "sub")
