"""Can the user running the tool do what a run needs? Checked up front, before any lock, read or
write, by the run and the dry run alike, so a dry run refuses exactly as the run would.

A run reads every store, writes a temporary file beside each store (in its directory, created
if missing) and renames it over the store, giving the new file the store's owner and group; it
writes backups and the manifest under the work directory. Each refusal names the path, the
user (name and uid) and what to do next. Permission errors met later anyway (a change made
meanwhile) are explained the same way (`explain`).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

from store_migrate.core.config import Settings
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import StoreMigrateError
from store_migrate.fs import durable


class AccessDenied(StoreMigrateError):
    """The user running the tool may not read or write a path the command needs."""


def _name(lookup: str, number: int) -> str:
    try:
        return pwd.getpwuid(number).pw_name if lookup == "user" else grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def user() -> str:
    """The effective user, as `user NAME (uid N)`."""
    uid = os.geteuid()
    return f"user {_name('user', uid)} (uid {uid})"


def owner_of(st: os.stat_result) -> str:
    names = f"{_name('user', st.st_uid)}:{_name('group', st.st_gid)}"
    return f"{names} ({st.st_uid}:{st.st_gid}), mode {stat.S_IMODE(st.st_mode):04o}"


def _allowed(path: str, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _existing(path: str) -> str:
    """`path`, or its nearest ancestor that exists (where a run would create the rest)."""
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _describe(path: str) -> str:
    try:
        return f"{path} ({owner_of(os.stat(path))})"
    except OSError:
        return path


def _unwritable(directory: str) -> str | None:
    """The directory this user would need to write in, and cannot, to create files in
    `directory`: `directory` itself (listed too: temporary files a killed run left behind), or
    when it does not exist its nearest existing ancestor (where the run creates it). None when
    it can, or when that is not a directory (the run names that itself)."""
    existing = _existing(directory)
    if not os.path.isdir(existing):
        return None
    if _allowed(existing, os.W_OK | os.X_OK | (os.R_OK if existing == directory else 0)):
        return None
    return existing


def run_problems(settings: Settings) -> list[str]:
    """Every reason the current user could not run a backfill on these stores and work dir."""
    problems = []
    blocked: dict[str, list[str]] = {}
    """Directories this user cannot write in -> what the run would do there."""
    uid, groups = os.geteuid(), {os.getegid(), *os.getgroups()}
    for store in settings.stores:
        target = os.path.realpath(store.path)
        label = f"[{store.kind}]"
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except PermissionError:
            problems.append(f"{label} cannot look up {store.path}: a directory above it is not searchable")
            continue
        regular = st is not None and stat.S_ISREG(st.st_mode)
        if regular and not _allowed(target, os.R_OK):
            problems.append(f"{label} cannot read {_describe(target)}")
        if regular and uid != 0 and st is not None and (st.st_uid != uid or st.st_gid not in groups):
            problems.append(
                f"{label} cannot replace {_describe(target)}: the new file must keep that owner and group, "
                "which only root (or that owner, in that group) can give it"
            )
        if (directory := _unwritable(os.path.dirname(target))) is not None:
            blocked.setdefault(directory, []).append(
                f"the new {label} store" if st is not None else f"the {label} store it creates")
    work = WorkDir(settings.work_dir)
    for directory in (work.manifests, work.backups):
        if (existing := _unwritable(directory)) is not None:
            blocked.setdefault(existing, []).append(f"{directory} (work directory)")
    for directory, needs in blocked.items():
        problems.append(f"cannot write in directory {_describe(directory)}, where the run writes {', '.join(needs)}")
    return problems


def check_run(settings: Settings) -> None:
    """Refuse (AccessDenied, nothing read or written) when `run_problems` finds any."""
    problems = run_problems(settings)
    if problems:
        raise AccessDenied(
            f"{user()} cannot run the backfill here; nothing was read or written:\n  " + "\n  ".join(problems),
            hint="run it as the user that owns the stores (or as root), or give this user those permissions "
            "(chown/chmod), then rerun",
        )


def explain(exc: PermissionError) -> AccessDenied:
    """A permission error met while working, told with the path, the user and a next step. A
    temporary file is named by the directory it was being made in."""
    path = str(exc.filename) if exc.filename else None
    if path is None:
        return AccessDenied(f"{user()}: {exc.strerror or exc}",
                            hint="run as the user that owns the stores (or as root), then rerun")
    name = os.path.basename(path)
    if durable.TEMP_MARK in name:
        directory = os.path.dirname(path)
        target = name[1:name.index(durable.TEMP_MARK)]
        where = f"cannot write in directory {_describe(directory)} (a temporary file for {target})"
    else:
        where = f"{exc.strerror or 'permission denied'}: {_describe(path)}"
    return AccessDenied(
        f"{user()} {where}",
        hint=f"give {user()} access to {os.path.dirname(path) if durable.TEMP_MARK in name else path} "
        "(chown/chmod), or run as its owner or as root; then rerun",
    )


def read_problem(path: str) -> str | None:
    """Why the current user cannot read `path`; None when it can, or when it does not exist."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        return f"{user()} cannot look up {path}: a directory above it is not searchable"
    if _allowed(path, os.R_OK):
        return None
    return f"{user()} cannot read {_describe(path)}"
