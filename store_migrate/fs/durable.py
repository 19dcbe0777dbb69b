"""Every file this tool writes goes through here: atomic replace, fsync, exclusive create, hashing.

A file is only ever replaced whole: a temporary file in the same directory is written, flushed,
fsynced and renamed over the target, and then the directory is fsynced. After a crash the target
holds its old bytes or its new bytes, never a mix. Temporary files carry TEMP_MARK in their name
so a later run can recognise and remove what a killed run left behind.

New files are created 0600 and new directories 0700: the stores hold secrets.

A store's directory is held open while a command writes in it (`held`). Checking a path and then
writing by that path leaves a gap: a user who owns a directory above the store could swap the
store's directory for a link to a root-only one in between. So once the lock is held, each
store's directory is opened and checked to be the very directory `ondisk.locate` walked to
(device and inode); missing directories below it are created relative to it; and from then on
the store is reached only through it: `Located.at` is `/proc/self/fd/<fd>/<name>`, which the
kernel resolves through the open directory whatever happens to the path meanwhile (worker
processes forked later inherit the descriptor). Every read, temporary file, rename and removal
of a store uses `at`; `target` is what is recorded and printed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from store_migrate.errors import StoreMigrateError
from store_migrate.fs.ondisk import Located, Ownership, UnsafeStorePath, open_regular, printable

TEMP_MARK = ".store-migrate-tmp-"
FILE_MODE = 0o600
DIR_MODE = 0o700
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def held(located: Sequence[Located], *, create: bool) -> Iterator[list[Located]]:
    """Each store with its directory held open and `at` set to reach it through that directory
    (see the module doc); with `create`, the missing directories on its path are made first (0700,
    owned like the directory above them). Without `create`, a store whose directory is missing
    keeps `at` = `target`: nothing is written there. Raises UnsafeStorePath when a directory is
    not the one `locate` walked to. The directories are closed on leaving."""
    opened: dict[tuple[int, int], int] = {}
    try:
        yield [_hold(found, create, opened) for found in located]
    finally:
        for fd in opened.values():
            os.close(fd)


def _hold(found: Located, create: bool, opened: dict[tuple[int, int], int]) -> Located:
    directory, name = os.path.split(found.target)
    below = [part for part in os.path.relpath(directory, found.anchor).split("/") if part != "."]
    if ".." in below or found.anchor_id is None:
        raise UnsafeStorePath(f"store path {found.path}: {printable(directory)} lies outside "
                              f"{printable(found.anchor)}, the directory it was found in")
    if below and not create:
        return found
    replaced = UnsafeStorePath(
        f"store path {found.path}: the directory {printable(found.anchor)} was replaced after it was checked",
        hint="someone renamed or swapped a directory on the store's path; make sure only root can, then rerun",
    )
    try:
        fd = os.open(found.anchor, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise replaced from None
        raise
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != found.anchor_id:
            raise replaced
        owner = Ownership.of(st).owner  # a store directory the tool creates stays the service's
        for part in below:
            fd, parent = _make_dir(fd, part, owner, found), fd
            os.close(parent)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    key = (st.st_dev, st.st_ino)
    if key in opened:
        os.close(fd)
    else:
        opened[key] = fd
    through = f"/proc/self/fd/{opened[key]}"
    if not os.path.isdir(through):
        raise StoreMigrateError("/proc is not mounted: the tool needs /proc/self/fd to write stores safely",
                                hint="mount procfs (mount -t proc proc /proc) and rerun")
    return replace(found, at=os.path.join(through, name))


def _make_dir(parent: int, name: str, owner: tuple[int, int] | None, found: Located) -> int:
    """`name` in the directory open as `parent`, created (0700, given `owner`, fsynced) when
    missing, and opened without following a link."""
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise UnsafeStorePath(
            f"store path {found.path}: {printable(name)} on its path became a link or a file while the run worked",
            hint="someone is changing the store's directories; make sure only root can, then rerun",
        ) from exc
    if made:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            fsync(parent)
        except BaseException:
            os.close(fd)
            raise
    return fd


def ensure_dir(path: str, owner: tuple[int, int] | None = None) -> None:
    """Create a directory and its missing parents with mode 0700, fsyncing each new entry; each
    new one given `owner` (uid, gid) when set (a store directory stays the service's)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    ensure_dir(parent, owner)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)
    fsync_dir(parent)


def make_new_dir(path: str) -> bool:
    """Create `path` (0700) if it does not exist yet; False when it already does."""
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


# The primitive operations below are the only places that touch the disk for writing, so tests
# can make any one of them fail (EIO, ENOSPC) and check that nothing is lost.


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view[: 1 << 30])
        view = view[written:]


def fsync(fd: int) -> None:
    os.fsync(fd)


def rename(source: str, target: str) -> None:
    os.rename(source, target)


def link(source: str, target: str) -> None:
    os.link(source, target)


def unlink(path: str) -> None:
    os.unlink(path)


def _open_temp(directory: str, name: str) -> tuple[str, int]:
    """A new temporary file beside `directory/name`, named so a later run can recognise it."""
    temp = os.path.join(directory, f".{name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)


def _temp_file(
    directory: str, name: str, fill: Callable[[int], None], mode: int, owner: tuple[int, int] | None
) -> str:
    """A new temporary file in `directory` (for `name`), filled by `fill(fd)`, given its mode and
    owner, fsynced; its path. Nothing is left behind if any of it fails."""
    temp, fd = _open_temp(directory, name)
    try:
        try:
            fill(fd)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        discard(temp)
        raise
    return temp


def write_temp(directory: str, name: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> str:
    """Write `data` to a new temporary file in `directory`, fsynced; return its path."""
    return _temp_file(directory, name, lambda fd: write_all(fd, data), mode, owner)


class _Unchanged(Exception):
    """The pieces hashed to the bytes the target already holds: no file is needed."""


def write_temp_stream(
    directory: str, name: str, pieces: Iterable[bytes | memoryview], mode: int, owner: tuple[int, int] | None,
    digest: Any, unless: str | None = None,
) -> tuple[str | None, int]:
    """`write_temp` for bytes made in pieces, each hashed into `digest` as it is written
    (`_write_pieces`). Returns the temporary file's path and its size; no path when the bytes hash
    to `unless` (the target's own hash): the file is then removed unsynced, so its pages are never
    written out."""
    size = 0

    def fill(fd: int) -> None:
        nonlocal size
        size = _write_pieces(fd, pieces, digest)
        if unless is not None and digest.hexdigest() == unless:
            raise _Unchanged

    try:
        return _temp_file(directory, name, fill, mode, owner), size
    except _Unchanged:
        return None, size


def _write_pieces(fd: int, pieces: Iterable[bytes | memoryview], digest: Any) -> int:
    """Hash each piece into `digest` and write it to `fd` in a second thread while the caller's
    thread makes the next one (hashing and writing release the GIL); how many bytes were written."""
    handoff: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=4)
    failed: list[BaseException] = []
    written = 0

    def drain() -> None:
        nonlocal written
        while (piece := handoff.get()) is not None:
            if failed:
                continue  # keep taking pieces so the maker never blocks on a dead writer
            try:
                digest.update(piece)
                write_all(fd, piece)
                written += len(piece)
            except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread
                failed.append(exc)

    writer = threading.Thread(target=drain, name="store-migrate-writer", daemon=True)
    writer.start()
    try:
        for piece in pieces:
            if failed:
                break
            handoff.put(piece)
    finally:
        handoff.put(None)
        writer.join()
    if failed:
        raise failed[0]
    return written


def discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def atomic_replace(path: str, data: bytes, *, mode: int = FILE_MODE, owner: tuple[int, int] | None = None) -> None:
    """Replace (or create) `path` with `data` atomically and durably."""
    directory, name = os.path.split(os.path.abspath(path))
    commit_temp(write_temp(directory, name, data, mode, owner), path)


def create_new(path: str, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Create `path` with `data` atomically and durably; FileExistsError if it exists."""
    directory, name = os.path.split(os.path.abspath(path))
    commit_new(write_temp(directory, name, data, mode, None), path)


def commit_temp(temp: str, target: str) -> None:
    """Rename a temp file written by write_temp over its target, durably; the temp is gone after."""
    try:
        rename(temp, target)
    except BaseException:
        discard(temp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(target)))


def copy_range(source_fd: int, target_fd: int, count: int) -> int:
    return os.copy_file_range(source_fd, target_fd, count)


def _copy(source_fd: int, target_fd: int, advance: Callable[[int], None] | None) -> None:
    """Copy a whole file in the kernel; where copy_file_range is not supported between these two
    filesystems, through a buffer."""
    try:
        while copied := copy_range(source_fd, target_fd, 64 << 20):
            if advance is not None:
                advance(copied)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(source_fd, 0, os.SEEK_SET)
    os.ftruncate(target_fd, 0)
    os.lseek(target_fd, 0, os.SEEK_SET)
    while chunk := os.read(source_fd, _CHUNK * 8):
        write_all(target_fd, chunk)
        if advance is not None:
            advance(len(chunk))


def copy_new(source: str, path: str, *, mode: int = FILE_MODE, advance: Callable[[int], None] | None = None) -> None:
    """Copy `source` to a new file `path` (FileExistsError if it exists) atomically and durably,
    in the kernel (copy_file_range), without holding the bytes in memory."""
    directory, name = os.path.split(os.path.abspath(path))
    commit_new(copy_to_temp(source, directory, name, mode=mode, advance=advance), path)


def copy_to_temp(
    source: str, directory: str, name: str, *, mode: int = FILE_MODE, advance: Callable[[int], None] | None = None
) -> str:
    """Copy `source` in the kernel to a new temporary file (for `name`) in `directory`, fsynced."""

    def fill(fd: int) -> None:
        source_fd, _ = open_regular(source)
        try:
            _copy(source_fd, fd, advance)
        finally:
            os.close(source_fd)

    return _temp_file(directory, name, fill, mode, None)


def commit_new(temp: str, path: str) -> None:
    """Give a written temporary file its name `path` (FileExistsError if it exists), durably; the
    temporary name goes away either way. `temp` may sit in another directory of the filesystem."""
    try:
        link(temp, path)
    finally:
        discard(temp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def link_new(existing: str, path: str) -> None:
    """Give an existing (never modified) file a second name, durably; FileExistsError if taken."""
    link(existing, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def remove(path: str) -> None:
    """Remove a file durably (the directory entry is fsynced)."""
    unlink(path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def remove_tree(directory: str) -> None:
    """Remove a directory of files (a run's backups), durably."""
    for name in os.listdir(directory):
        unlink(os.path.join(directory, name))
    fsync_dir(directory)
    os.rmdir(directory)
    fsync_dir(os.path.dirname(os.path.abspath(directory)))


_TEMP_NAME = re.compile(r"\A\.(?P<name>.+)" + re.escape(TEMP_MARK) + r"(?P<pid>\d+)-[0-9a-f]{8}\Z")


def _alive(pid: int) -> bool:
    """Whether a process is running (a zombie, dead but not yet reaped, is not)."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            state = stat_file.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_temps(
    directory: str, *, only_for: str | None = None, locked: bool = False, mine: bool = False
) -> list[str]:
    """Remove the temporary files that killed runs left in `directory` (only those of `only_for`,
    a file name, when given). A temp file whose writer is still running is left alone, unless the
    caller holds the lock that every writer of such files holds (`locked`), or it is this
    process's own and `mine` (a run that stopped early, once its threads are done)."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = _TEMP_NAME.match(entry)
        if match is None or (only_for is not None and match["name"] != only_for):
            continue
        pid = int(match["pid"])
        if not locked and _alive(pid) and not (mine and pid == os.getpid()):
            continue
        discard(os.path.join(directory, entry))
        removed.append(os.path.join(directory, entry))
    return removed


def leftover_temps(directory: str, *, only_for: str | None = None) -> list[str]:
    """The temporary files that stopped runs left in `directory` (only those of `only_for`, a file
    name, when given) and whose writer is no longer running, sorted; reads only. What
    `remove_leftover_temps` would remove without the lock, for commands that only look. None in a
    directory this user may not list (the look is a courtesy: it never fails the command)."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    found = []
    for entry in sorted(entries):
        match = _TEMP_NAME.match(entry)
        if match is None or (only_for is not None and match["name"] != only_for) or _alive(int(match["pid"])):
            continue
        found.append(os.path.join(directory, entry))
    return found
