"""A file on disk: where a store path leads, how a file is opened, and what it is.

Where a store path leads. A store path may go through symbolic links (the service's storage
directory is often one), but the tool runs as root, so a link is followed only along a safe
transition, as systemd-tmpfiles does: a link that an unprivileged user made, or that sits in a
directory such a user owns (and so could swap), may only lead to a file or directory owned by
that same user. A link root made in a root-owned directory may lead anywhere, the service user's
directory included. The final file must be a regular file (or not exist yet); a FIFO, device or
directory is refused up front, never opened (opening a FIFO would block while the lock is held).
A run records where each store path led (`resolved_path` in the manifest); verify and rollback
follow the path again and refuse when it now leads elsewhere.

Where it is written: durable.held holds the store's directory open (`Located.at`).

How a file is opened: never through a final link, never blocking, and only when it is a regular
file (`open_regular`); every read of a store or a backup goes through here.

What a file is: `FileState`, its bytes' SHA-256, its identity (device, inode, size, mtime,
ctime: the same identity later means nobody touched it) and its owner, group and mode, which a
file written in its place is given (`Ownership`).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import pwd
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from store_migrate.errors import StoreMigrateError

_MAX_LINKS = 40
_CHUNK = 1 << 20


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class UnsafeStorePath(StoreMigrateError):
    """A store path that cannot be used safely: an unsafe link, not a regular file, a path that
    cannot be printed, the same file twice, or a file inside the work directory."""


def printable(path: str) -> str:
    """`path` safe to print on one line: as it is when it is plain text, else Python-quoted."""
    return path if not unsafe_text(path) else ascii(path)


def unsafe_text(path: str) -> bool:
    """Whether `path` holds a control character or bytes that are not UTF-8 (which os.fsdecode
    turns into lone surrogates): it could forge output lines or not survive the manifest."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in path)


def require_printable(path: str, what: str) -> None:
    if unsafe_text(path):
        raise UnsafeStorePath(
            f"{what} {ascii(path)} holds a control character or bytes that are not UTF-8",
            hint="use a path of printable UTF-8 characters (rename the file or use a link to it)",
        )


@dataclass(frozen=True)
class Located:
    """Where a store path leads: `target` is the path with every link resolved."""

    path: str
    target: str
    exists: bool
    device: int | None = None
    inode: int | None = None
    anchor: str = "/"
    """The deepest directory on `target`'s path that existed (its own directory, normally)."""
    anchor_id: tuple[int, int] | None = None
    """The anchor's device and inode when it was walked to: `held` opens that very directory."""
    at: str = ""
    """`target` reached through its directory held open (`held`); `target` until then. Every
    read and write of the store uses it."""

    def __post_init__(self) -> None:
        if not self.at:
            object.__setattr__(self, "at", self.target)


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def locate(path: str, what: str, *, allow_dangling: bool = False) -> Located:
    """Follow `path` (absolute) to the file it names, through safe links only; see the module doc.
    Raises UnsafeStorePath for an unsafe link, something not a regular file, or (unless
    `allow_dangling`: rollback restores a missing file at the target a run recorded) a link that
    leads nowhere."""
    require_printable(path, what)
    parts = [p for p in path.split("/") if p]
    current, current_st = "/", os.lstat("/")
    followed: list[str] = []
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)
            current_st = os.lstat(current)
            continue
        candidate = os.path.join(current, name)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return _missing(path, what, os.path.join(candidate, *parts), current, current_st, followed,
                            allow_dangling)
        except NotADirectoryError:
            raise UnsafeStorePath(f"{what} {path}: {current} is not a directory") from None
        if stat.S_ISLNK(st.st_mode):
            text = _read_link(path, what, candidate, st, current_st, followed)
            if text.startswith("/"):
                current, current_st = "/", os.lstat("/")
            parts = [p for p in text.split("/") if p] + parts
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise UnsafeStorePath(f"{what} {path}: {candidate} is not a directory")
        parent, parent_st = current, current_st
        current, current_st = candidate, st
    if not stat.S_ISREG(current_st.st_mode):
        raise UnsafeStorePath(
            f"{what} {path} is {_kind_of(current_st.st_mode)}, not a regular file",
            hint="point the store variable at the store's JSON file; nothing was opened or changed",
        )
    return Located(path, current, True, current_st.st_dev, current_st.st_ino,
                   anchor=parent, anchor_id=(parent_st.st_dev, parent_st.st_ino))


def _missing(
    path: str, what: str, target: str, anchor: str, anchor_st: os.stat_result, followed: list[str],
    allow_dangling: bool,
) -> Located:
    """A store path that leads to nothing (yet): a run creates the store, and the directories
    missing below `anchor`, at this very `target`; refused when a link on the way leads nowhere,
    unless `allow_dangling`."""
    dangling = [link for link in followed if not os.path.exists(link)]
    if dangling and not allow_dangling:
        raise UnsafeStorePath(
            f"{what} {path}: the symbolic link {dangling[0]} leads nowhere",
            hint="fix or remove the link; a dangling link is never followed",
        ) from None
    return Located(path, os.path.normpath(target), False, anchor=anchor,
                   anchor_id=(anchor_st.st_dev, anchor_st.st_ino))


def _read_link(
    path: str, what: str, link: str, link_st: os.stat_result, dir_st: os.stat_result, followed: list[str]
) -> str:
    """The text of a link on the path, once it is known safe to follow; `followed` counts it."""
    followed.append(link)
    if len(followed) > _MAX_LINKS:
        raise UnsafeStorePath(f"{what} {path} goes through more than {_MAX_LINKS} symbolic links")
    _require_safe_link(path, what, link, link_st, dir_st)
    return os.readlink(link)


def _require_safe_link(path: str, what: str, link: str, link_st: os.stat_result, dir_st: os.stat_result) -> None:
    """Refuse a link that an unprivileged user controls (made it, or owns its directory) when it
    leads to something another user owns."""
    controllers = {link_st.st_uid, dir_st.st_uid} - {0}
    if not controllers:
        return
    destination = os.path.realpath(link)
    try:
        owner = os.stat(destination).st_uid
    except FileNotFoundError:
        raise UnsafeStorePath(
            f"{what} {path}: the symbolic link {link} leads to {printable(destination)}, which does not exist",
            hint="fix or remove the link; a dangling link is never followed",
        ) from None
    for uid in sorted(controllers):
        if owner != uid:
            raise UnsafeStorePath(
                f"{what} {path}: refusing to follow the symbolic link {link}, which {user_name(uid)} controls, "
                f"to {printable(destination)}, owned by {user_name(owner)}",
                hint="a link an unprivileged user controls may only lead to that user's own files; "
                "point the store variable at the real file, or have root own the link and its directory",
            )


def pinned(path: str, resolved: str | None, what: str, *, allow_dangling: bool = False) -> Located:
    """`locate(path)`, refused when it no longer leads to `resolved`, where the run found it (None
    for manifests written before runs recorded it: any safe resolution is accepted then)."""
    found = locate(path, what, allow_dangling=allow_dangling)
    if resolved is not None and found.target != resolved:
        raise UnsafeStorePath(
            f"{what} {path} now leads to {printable(found.target)}, not to {resolved} where the run found it",
            hint="a symbolic link on the path was changed after the run; put it back, or restore by hand",
        )
    return found


def pinned_or_reason(path: str, resolved: str | None, *, allow_dangling: bool) -> Located | str:
    """`pinned`, or the reason it may not be followed (for a command that reports every store)."""
    try:
        return pinned(path, resolved, "store path", allow_dangling=allow_dangling)
    except UnsafeStorePath as exc:
        return exc.message


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def locate_stores(stores: Sequence[tuple[str, str, str]], work_dir: str) -> list[Located]:
    """Check a run's store paths up front, before any lock is taken or anything is written:
    each (kind, path, where the path came from) must be printable, lead safely to a regular file
    or to nothing, not be another store's file, and not lie inside the work directory."""
    located = [locate(path, f"[{kind}] store path (from {source})") for kind, path, source in stores]
    work = os.path.realpath(work_dir)
    for (kind, path, source), found in zip(stores, located, strict=True):
        if _inside(path, os.path.abspath(work_dir)) or _inside(found.target, work):
            raise UnsafeStorePath(
                f"[{kind}] store path {path} (from {source}) lies inside the work directory {work_dir}",
                hint="the work directory holds manifests and backups only; keep the stores outside it",
            )
    for i, (kind, path, source) in enumerate(stores):
        for other_kind, other_path, other_source in stores[:i]:
            mine, theirs = located[i], located[[k for k, _, _ in stores].index(other_kind)]
            same_inode = mine.exists and (mine.device, mine.inode) == (theirs.device, theirs.inode)
            if mine.target == theirs.target or same_inode:
                raise UnsafeStorePath(
                    f"[{kind}] {path} (from {source}) and [{other_kind}] {other_path} (from {other_source}) "
                    "are the same file",
                    hint="each store needs its own file; check the store path variables",
                )
    return located


@dataclass(frozen=True)
class Ownership:
    """The owner, group and mode a store file gets, so that the service can read it."""

    mode: int
    uid: int
    gid: int

    @classmethod
    def of(cls, st: os.stat_result) -> Ownership:
        return cls(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

    @property
    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) to give a new file, or None when it is the user running the tool's own. A
        user other than root keeps a file it creates (access.py has refused a run that would
        need to give away a store it replaces)."""
        mine = (os.geteuid(), os.getegid())
        return None if (self.uid, self.gid) == mine or os.geteuid() != 0 else (self.uid, self.gid)


def ownership_for_new(target: str, siblings: Sequence[str]) -> Ownership:
    """What a store file the tool creates at `target` (no file to take it from) gets: the owner,
    group and mode of another store in the same directory, else the owner and group of the
    directory (or of its nearest ancestor that exists, where the tool creates the rest) with mode
    0600. Run as root in the service's directory, a new store must still be the
    service's."""
    directory = os.path.dirname(target)
    for other in siblings:
        if other != target and os.path.dirname(other) == directory:
            try:
                st = os.lstat(other)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                return Ownership.of(st)
    st = os.stat(_nearest_existing(directory))
    return Ownership(0o600, st.st_uid, st.st_gid)


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


# ----------------------------------------------------------------- opening and identifying files

READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
"""Every file is opened for reading without following a final link (callers resolve store
paths safely first, `locate`) and without blocking (a FIFO planted in a store's place must
not hang the tool while it holds the lock); what is opened must then be a regular file."""


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

    def to_json(self) -> dict[str, int]:
        return {"device": self.device, "inode": self.inode, "size": self.size,
                "mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns}


@dataclass(frozen=True)
class FileState:
    """A regular file as it was found: the SHA-256 of its bytes, what tells it apart from any later
    version of it (identity), and its owner, group and mode (given on to the file that replaces
    it). The one type for a store as a run read it and a live store as rollback found it."""

    sha256: str
    identity: FileIdentity
    ownership: Ownership

    @property
    def size(self) -> int:
        return self.identity.size

    @classmethod
    def of(cls, sha256: str, st: os.stat_result) -> FileState:
        return cls(sha256, FileIdentity.of(st), Ownership.of(st))

    @classmethod
    def as_recorded(cls, st: os.stat_result, sha256: str, identity: dict[str, int] | None) -> FileState | None:
        """The state of a regular file (lstat `st`) that still has the `identity` a run recorded
        right after writing the bytes with `sha256`: the same identity means the same bytes, which
        then need not be read. None when it has another (or none was recorded)."""
        if identity is None or not stat.S_ISREG(st.st_mode) or FileIdentity.of(st).to_json() != identity:
            return None
        return cls.of(sha256, st)


@dataclass(frozen=True)
class _Opened:
    """A regular file's identity and ownership when it was opened, and the hash of its bytes."""

    identity: FileIdentity
    ownership: Ownership
    _digest: Future[str]

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the bytes (waits for it when a thread is computing it)."""
        return self._digest.result()

    @property
    def state(self) -> FileState:
        return FileState(self.sha256, self.identity, self.ownership)


@dataclass(frozen=True)
class Snapshot(_Opened):
    """A file's bytes as read once, and its state when opened."""

    data: bytes


def _sha256(data: bytes | memoryview, *, background: bool) -> Future[str]:
    """The hex SHA-256 of `data`, now or computed by a thread (hashing releases the GIL)."""
    digest: Future[str] = Future()
    if not background:
        digest.set_result(hashlib.sha256(data).hexdigest())
        return digest

    def work() -> None:
        try:
            digest.set_result(hashlib.sha256(data).hexdigest())
        except Exception as exc:  # noqa: BLE001 - raised again for whoever asks for the hash
            digest.set_exception(exc)

    threading.Thread(target=work, name="store-migrate-hash", daemon=True).start()
    return digest


def _read_regular(path: str, read: Callable[[int, os.stat_result], Any]) -> tuple[Any, os.stat_result] | None:
    """`read(fd, stat)` of a regular file, and its stat; None when it does not exist."""
    try:
        fd, st = open_regular(path)
    except FileNotFoundError:
        return None
    try:
        return read(fd, st), st
    finally:
        os.close(fd)


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A file descriptor for reading `path` (READ_FLAGS) and its stat; IsADirectoryError when it is
    not a regular file, OSError(ELOOP) when it is a symbolic link."""
    fd = os.open(path, READ_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_whole(fd: int, _: os.stat_result) -> bytes:
    with os.fdopen(fd, "rb", closefd=False) as handle:
        return handle.read()


def read_snapshot(path: str, *, hash_in_background: bool = False) -> Snapshot | None:
    """Read a regular file whole and hash it; None when it does not exist. With
    `hash_in_background` the hash is computed by a thread while the caller goes on, for example
    parsing the bytes; `sha256` waits for it."""
    found = _read_regular(path, _read_whole)
    if found is None:
        return None
    data, st = found
    digest = _sha256(data, background=hash_in_background)
    return Snapshot(FileIdentity.of(st), Ownership.of(st), digest, data=data)


@dataclass(frozen=True)
class Mapped(_Opened):
    """A file's pages mapped read-only (no copy into this process's memory), with the hash of
    its bytes computed by a thread meanwhile, and the identity and mode it had when opened.
    `data` is valid until `close`; nothing may hold a view of it then."""

    data: memoryview
    _map: mmap.mmap | None

    def close(self) -> None:
        self._digest.result()  # the hashing thread reads the map
        self.data.release()
        if self._map is not None:
            self._map.close()


def map_snapshot(path: str) -> Mapped | None:
    """`read_snapshot(path, hash_in_background=True)` without reading the bytes into memory:
    about 0.1-0.2 s and 200 MB of fresh pages less for a 200 MB store. A file truncated while
    it is mapped raises SIGBUS on access: use only where that signal ends a worker process, whose
    parent reports it (workers.in_worker). None when the file does not exist."""
    found = _read_regular(path, lambda fd, st: mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if st.st_size else None)
    if found is None:
        return None
    mapping, st = found
    data = memoryview(mapping) if mapping is not None else memoryview(b"")
    digest = _sha256(data, background=True)
    return Mapped(FileIdentity.of(st), Ownership.of(st), digest, data=data, _map=mapping)


def hash_file(path: str, advance: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 hex and size of a file, read in chunks (no whole-file buffer)."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(open_regular(path)[0], "rb") as handle:
        while chunk := handle.read(_CHUNK * 8):
            digest.update(chunk)
            size += len(chunk)
            if advance is not None:
                advance(len(chunk))
    return digest.hexdigest(), size


def first_hole(path: str) -> int | None:
    """Where the first hole of a sparse file starts (a range the filesystem does not store, which
    reads as NUL bytes), or None: no hole, no file, or a filesystem that cannot tell. A store
    with a hole holds NUL bytes, so it is not JSON; finding that takes one call, where reading it
    (`truncate -s 8G` makes such a file in an instant) would take minutes."""
    try:
        fd, st = open_regular(path)
    except OSError:
        return None  # the read that follows says why
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        return None
    finally:
        os.close(fd)
    return hole if hole < st.st_size else None


def size_of(path: str) -> int:
    """A file's size in bytes; 0 when it does not exist."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def identity(path: str) -> FileIdentity | None:
    """The identity of the directory entry `path` itself (a link is not followed: a store swapped
    for a link no longer has the identity it was read with)."""
    try:
        return FileIdentity.of(os.lstat(path))
    except FileNotFoundError:
        return None
