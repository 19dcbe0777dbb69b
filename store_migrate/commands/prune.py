"""`prune`: which old manifests and backup directories it may remove, and removing them (under
the lock).

Prune removes only names a run made: a manifest `manifests/<TIMESTAMP>.json` (a regular file)
and its backup directory `backups/<TIMESTAMP>/` (a real directory, not a link), which must hold
nothing but regular files named like backups, `<store>-<TIMESTAMP>-<sha12>.bak.json`. It never
follows a link: a manifest or backup directory that is one, or a backup directory holding
anything else, is kept and named with the reason, for a person to look at.

A manifest is still needed, and kept, when it is one of the newest `keep`, when its run did not
finish (`pending`), when a store it changed (`changed: true`) still holds its after_sha256 (its
rollback may be needed) and no newer manifest carries the same before state for that store, or
when its backup directory holds a file a forced rollback kept. A store the run left unchanged
does not hold a manifest, and neither does one a newer manifest rolls back to the same bytes (a
rerun carries the before state of the stores an earlier run migrated, backups hard-linked).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from store_migrate.core import manifest
from store_migrate.core.config import Settings
from store_migrate.core.manifest import PENDING, StoreEntry
from store_migrate.core.stores import KIND_ORDER
from store_migrate.core.workdir import WorkDir
from store_migrate.errors import StoreMigrateError
from store_migrate.fs import durable, ondisk
from store_migrate.fs.lock import locked

log = structlog.get_logger("store_migrate")

_MANIFEST_NAME = re.compile(r"\A(?P<stamp>\d{8}T\d{6}Z)\.json\Z")
_BACKUP_NAME = re.compile(r"\A(?P<store>[a-z_]+)-\d{8}T\d{6}Z-[0-9a-f]{12}\.bak\.json\Z")
_KEPT_NAME = re.compile(r"\A[a-z_]+-\d{8}T\d{6}Z-[0-9a-f]{12}\.pre-rollback\.json\Z")


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)
    """Manifests and backup directories removed."""
    kept: list[tuple[str, str]] = field(default_factory=list)
    """Manifests kept, each with the reason."""


def _kind_of(path: str) -> str | None:
    """'link', 'file', 'directory', 'other' or None (missing), without following a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    return "file" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else "other"


def _backup_files(directory: str) -> tuple[list[str], str | None]:
    """The backups in a run's backup directory, or why prune must leave the directory alone."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        names = sorted(os.listdir(fd))
        kinds = {name: stat.S_IFMT(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode) for name in names}
    finally:
        os.close(fd)
    kept = [n for n in names if _KEPT_NAME.match(n) and kinds[n] == stat.S_IFREG]
    if kept:
        return [], (f"its backups hold files a forced rollback kept ({', '.join(kept)}); "
                    "remove them by hand once they are not needed")
    foreign = [
        n for n in names
        if kinds[n] != stat.S_IFREG or not (m := _BACKUP_NAME.match(n)) or m["store"] not in KIND_ORDER
    ]
    if foreign:
        return [], (f"its backup directory {directory} holds {', '.join(foreign)}, which no run made "
                    "(links are never followed); remove them by hand, then prune again")
    return names, None


def _reason_to_keep(
    settings: Settings, path: str, stamp: str, current: Callable[[StoreEntry], str | None],
    carried: Callable[[str, str, str | None], bool],
) -> str | None:
    """Why this old manifest (and its backups) must stay; None when both may go."""
    if _kind_of(path) != "file":
        return f"not a regular file ({_kind_of(path)}); prune removes only the manifests runs write"
    try:
        record = manifest.load(path)
    except StoreMigrateError as exc:
        return f"unreadable, left for a person to look at: {exc.message}"
    if record.status == PENDING:
        return "pending: its run did not finish; its rollback may be needed"
    live = [e.store for e in record.stores
            if e.changed and current(e) == e.after_sha256 and not carried(stamp, e.path, e.before_sha256)]
    if live:
        verb = "holds" if len(live) == 1 else "hold"
        return f"{', '.join(live)} still {verb} its after_sha256: its rollback may be needed"
    backups = WorkDir(settings.work_dir).backup_dir(stamp)
    if record.backup_dir is not None and os.path.normpath(record.backup_dir) != backups:
        return f"its backup_dir {record.backup_dir} is not {backups}; prune removes only what runs make there"
    kind = _kind_of(backups)
    if kind not in (None, "directory"):
        return f"{backups} is a {kind}, not a backup directory; it is never followed or removed"
    return None if kind is None else _backup_files(backups)[1]


def _before_states(directory: str, names: list[str]) -> dict[str, set[tuple[str, str | None]]]:
    """For each readable manifest (by TIMESTAMP): the (store path, before_sha256) of the stores
    its rollback returns to their before bytes."""
    states = {}
    for name in names:
        try:
            record = manifest.load(os.path.join(directory, name))
        except StoreMigrateError:
            continue  # kept, with its reason, when its turn comes
        if record.complete:  # a run that did not finish, or was put back, rolls nothing back
            states[name.removesuffix(".json")] = {(e.path, e.before_sha256) for e in record.stores if e.changed}
    return states


def remove_old(settings: Settings, keep: int, dry_run: bool) -> PruneResult:
    """The rules above, applied to the manifests in the work directory (the caller holds the
    stores' lock, so no run or rollback changes them meanwhile)."""
    result = PruneResult()
    hashes: dict[str, str | None] = {}

    def current(entry: StoreEntry) -> str | None:
        """The hash of the bytes a manifest's store path leads to now (links followed safely, as
        verify and rollback follow them); None when it leads nowhere or not safely."""
        if entry.path not in hashes:
            try:
                target = ondisk.locate(entry.path, f"[{entry.store}] store path").target
                hashes[entry.path] = ondisk.hash_file(target)[0]
            except (OSError, StoreMigrateError):
                hashes[entry.path] = None
        return hashes[entry.path]

    work = WorkDir(settings.work_dir)
    directory = work.manifests
    for place in (work.root, directory, work.backups):
        if _kind_of(place) not in (None, "directory"):
            raise StoreMigrateError(f"refusing to prune: {place} is a {_kind_of(place)}, not a directory",
                                    hint="prune never follows a link; look at the work directory by hand")
    entries = sorted(os.listdir(directory)) if _kind_of(directory) == "directory" else []
    names = [n for n in entries if _MANIFEST_NAME.match(n)]
    for other in (n for n in entries if n.endswith(".json") and n not in names):
        result.kept.append((os.path.join(directory, other), "not named like a run's manifest; never removed"))
    newest = set(names[-keep:]) if keep > 0 else set()
    carriers = _before_states(directory, names)

    def carried(stamp: str, store_path: str, before: str | None) -> bool:
        """Whether a newer manifest rolls this store back to the same before bytes."""
        return any(later > stamp and (store_path, before) in states for later, states in carriers.items())

    for name in names:
        path = os.path.join(directory, name)
        if name in newest:
            result.kept.append((path, f"one of the newest {keep}"))
            continue
        stamp = name.removesuffix(".json")
        reason = _reason_to_keep(settings, path, stamp, current, carried)
        if reason is not None:
            result.kept.append((path, reason))
            continue
        backups = work.backup_dir(stamp)
        has_backups = _kind_of(backups) == "directory"
        if not dry_run:
            durable.remove(path)
            if has_backups:
                durable.remove_tree(backups)
        log.info("manifest.pruned", path=path, backups=backups if has_backups else None, dry_run=dry_run)
        result.removed += [path, backups] if has_backups else [path]
    return result


def prune(settings: Settings, *, keep: int, dry_run: bool = False, lock_timeout: float = 30.0) -> PruneResult:
    """Remove old manifests and their backup directories, under the same lock as a run: never
    the newest `keep`, never one a store it changed still needs, never anything a run did not
    make, never through a link (the rules are above: `remove_old`)."""
    with locked([s.path for s in settings.stores], lock_timeout):
        return remove_old(settings, keep, dry_run)
