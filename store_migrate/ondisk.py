"""Where a store path leads on disk, and whether the tool may follow it there.

A store path may go through symbolic links (the service's storage directory is often one), but
the tool runs as root, so a link is followed only along a safe transition, as systemd-tmpfiles
does: a link that an unprivileged user made, or that sits in a directory such a user owns (and
so could swap), may only lead to a file or directory owned by that same user. A link root made
in a root-owned directory may lead anywhere, the service user's directory included. The final
file must be a regular file (or not exist yet); a FIFO, device or directory is refused up front,
never opened (opening a FIFO would block while the lock is held).

A run records where each store path led (`resolved_path` in the manifest); verify and rollback
follow the path again and refuse when it now leads elsewhere.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import StoreMigrateError
from .workdir import user_name

_MAX_LINKS = 40


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

    @property
    def linked(self) -> bool:
        return self.target != self.path


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
            # Not there (yet): a run creates the store (and its directories) at this very path.
            dangling = [link for link in followed if not os.path.exists(link)]
            if dangling and not allow_dangling:
                raise UnsafeStorePath(
                    f"{what} {path}: the symbolic link {dangling[0]} leads nowhere",
                    hint="fix or remove the link; a dangling link is never followed",
                ) from None
            return Located(path, os.path.normpath(os.path.join(candidate, *parts)), False)
        except NotADirectoryError:
            raise UnsafeStorePath(f"{what} {path}: {current} is not a directory") from None
        if stat.S_ISLNK(st.st_mode):
            followed.append(candidate)
            if len(followed) > _MAX_LINKS:
                raise UnsafeStorePath(f"{what} {path} goes through more than {_MAX_LINKS} symbolic links")
            _require_safe_link(path, what, candidate, st, current_st)
            text = os.readlink(candidate)
            if text.startswith("/"):
                current, current_st = "/", os.lstat("/")
            parts = [p for p in text.split("/") if p] + parts
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise UnsafeStorePath(f"{what} {path}: {candidate} is not a directory")
        current, current_st = candidate, st
    if not stat.S_ISREG(current_st.st_mode):
        raise UnsafeStorePath(
            f"{what} {path} is {_kind_of(current_st.st_mode)}, not a regular file",
            hint="point the store variable at the store's JSON file; nothing was opened or changed",
        )
    return Located(path, current, True, current_st.st_dev, current_st.st_ino)


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
    group and mode of another store in the same directory, else the directory's owner and group
    with mode 0600. Run as root in the service's directory, a new store must still be the
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
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return Ownership(0o600, os.geteuid(), os.getegid())
    return Ownership(0o600, st.st_uid, st.st_gid)
