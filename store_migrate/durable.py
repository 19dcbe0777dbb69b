"""Every file this tool writes goes through here: atomic replace, fsync, exclusive create, hashing.

A file is only ever replaced whole: a temporary file in the same directory is written, flushed,
fsynced and renamed over the target, and then the directory is fsynced. After a crash the target
holds its old bytes or its new bytes, never a mix. Temporary files carry TEMP_MARK in their name
so a later run can recognise and remove what a killed run left behind.

New files are created 0600 and new directories 0700: the stores hold secrets.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass

TEMP_MARK = ".store-migrate-tmp-"
FILE_MODE = 0o600
DIR_MODE = 0o700
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    """What tells us a file was not touched since we read it."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Snapshot:
    """A file's bytes as read once, with their hash and the identity and mode they had."""

    data: bytes
    sha256: str
    identity: FileIdentity
    mode: int
    uid: int
    gid: int


def read_snapshot(path: str) -> Snapshot | None:
    """Read a regular file whole and hash it; None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", path)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    finally:
        os.close(fd)
    return Snapshot(
        data,
        hashlib.sha256(data).hexdigest(),
        FileIdentity.of(st),
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
    )


def hash_file(path: str) -> tuple[str, int]:
    """SHA-256 hex and size of a file, read in chunks (no whole-file buffer)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def identity(path: str) -> FileIdentity | None:
    try:
        return FileIdentity.of(os.stat(path))
    except FileNotFoundError:
        return None


def ensure_dir(path: str) -> None:
    """Create a directory and its missing parents with mode 0700, fsyncing each new entry."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    ensure_dir(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
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


def _write_temp(directory: str, name: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> str:
    """Write `data` to a new temporary file in `directory`, fsynced; return its path."""
    temp = os.path.join(directory, f".{name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            write_all(fd, data)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _discard(temp)
        raise
    return temp


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def atomic_replace(path: str, data: bytes, *, mode: int = FILE_MODE, owner: tuple[int, int] | None = None) -> None:
    """Replace (or create) `path` with `data` atomically and durably."""
    directory, name = os.path.split(os.path.abspath(path))
    temp = _write_temp(directory, name, data, mode, owner)
    try:
        rename(temp, path)
    except BaseException:
        _discard(temp)
        raise
    fsync_dir(directory)


def create_new(path: str, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Create `path` with `data` atomically and durably; FileExistsError if it exists."""
    directory, name = os.path.split(os.path.abspath(path))
    temp = _write_temp(directory, name, data, mode, None)
    try:
        link(temp, path)
    finally:
        _discard(temp)
    fsync_dir(directory)


def remove(path: str) -> None:
    """Remove a file durably (the directory entry is fsynced)."""
    unlink(path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


_TEMP_NAME = re.compile(r"\A\.(?P<name>.+)" + re.escape(TEMP_MARK) + r"(?P<pid>\d+)-[0-9a-f]{8}\Z")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_temps(directory: str, *, only_for: str | None = None) -> list[str]:
    """Remove the temporary files that killed runs left in `directory` (only those of `only_for`,
    a file name, when given). A temp file whose writer is still alive is left alone."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = _TEMP_NAME.match(entry)
        if match is None or (only_for is not None and match["name"] != only_for) or _alive(int(match["pid"])):
            continue
        _discard(os.path.join(directory, entry))
        removed.append(os.path.join(directory, entry))
    return removed
