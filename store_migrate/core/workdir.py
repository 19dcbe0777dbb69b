"""The work directory: its layout (names, timestamps, paths) and why the tool may trust it.

    $WORK_DIR/manifests/<TIMESTAMP>.json                                    one manifest per run
    $WORK_DIR/backups/<TIMESTAMP>/<store>-<TIMESTAMP>-<sha12>.bak.json      that run's backups
    $WORK_DIR/backups/<TIMESTAMP>/<store>-<TIMESTAMP>-<sha12>.pre-rollback.json
                                                     a newer file kept by a forced rollback

TIMESTAMP is the run's start in UTC, like 20260222T085502Z, so names sort by time.

The work directory is the root of trust: whatever is in it steers rollback, which runs as root
and writes store files. So `WORK_DIR`, `manifests/` and `backups/` (and each run's backup
directory) are created 0700, and when they already exist they must be real directories (not
symbolic links), owned by the user running the tool or by root, and writable by nobody else.
A manifest given to rollback, and the directory it sits in, obey the same rule; a manifest given
to verify (which changes nothing) must be owned by the user or root and writable by nobody else.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime

from store_migrate.errors import StoreMigrateError
from store_migrate.fs import durable
from store_migrate.fs.ondisk import user_name

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""`generated_at` of a manifest and `written_at` of a report (RFC 3339, UTC, whole seconds)."""
_STAMP = r"\d{8}T\d{6}Z"
BACKUP_NAME = re.compile(rf"(?P<store>[a-z_]+)-(?P<stamp>{_STAMP})-(?P<sha12>[0-9a-f]{{12}})\.bak\.json")
MANIFEST_NAME = re.compile(rf"(?P<stamp>{_STAMP})\.json")
PRE_ROLLBACK_SUFFIX = ".pre-rollback.json"


def stamp(moment: datetime) -> str:
    """The TIMESTAMP that names a run's manifest and backup directory, like 20260222T085502Z."""
    return moment.strftime(STAMP_FORMAT)


def backup_name(store: str, run_stamp: str, sha256: str) -> str:
    return f"{store}-{run_stamp}-{sha256[:12]}.bak.json"


def pre_rollback_name(store: str, rollback_stamp: str, sha256: str) -> str:
    return f"{store}-{rollback_stamp}-{sha256[:12]}{PRE_ROLLBACK_SUFFIX}"


class UntrustedPath(StoreMigrateError):
    """A directory or manifest that someone other than the user running the tool (or root) could
    have written: nothing in it can be trusted to steer a rollback."""


@dataclass(frozen=True)
class WorkDir:
    root: str

    @property
    def manifests(self) -> str:
        return os.path.join(self.root, "manifests")

    @property
    def backups(self) -> str:
        return os.path.join(self.root, "backups")

    def manifest_path(self, run_stamp: str) -> str:
        return os.path.join(self.manifests, f"{run_stamp}.json")

    def backup_dir(self, run_stamp: str) -> str:
        return os.path.join(self.backups, run_stamp)

    def check(self) -> None:
        """Refuse (UntrustedPath) when a part of the work directory that exists is not trusted."""
        for directory in (self.root, self.manifests, self.backups):
            try:
                st = os.lstat(directory)
            except FileNotFoundError:
                continue
            require_trusted_dir(directory, st)
            if not os.access(directory, os.W_OK | os.X_OK):
                me = user_name(os.geteuid())
                raise UntrustedPath(
                    f"directory {directory} (owner {user_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}) "
                    f"cannot be written by {me}, who runs this",
                    hint=f"run as {user_name(st.st_uid)}, or set WORK_DIR to a directory {me} owns",
                )

    def create(self) -> None:
        """Create the missing parts (0700), then check every part."""
        for directory in (self.root, self.manifests, self.backups):
            durable.ensure_dir(directory)
        self.check()

    @classmethod
    def of_manifest(cls, manifest_path: str) -> tuple[WorkDir, str]:
        """The work directory a manifest at `<work dir>/manifests/<TIMESTAMP>.json` belongs to, and
        that TIMESTAMP (the file's name without `.json`, whatever it is)."""
        absolute = os.path.abspath(manifest_path)
        manifests, name = os.path.split(absolute)
        return cls(os.path.dirname(manifests)), name.removesuffix(".json")


def _owner_problem(path: str, st: os.stat_result, what: str, *, others_may_write_dir: bool = False) -> str | None:
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        return (f"{what} {path} is owned by {user_name(st.st_uid)}, not by {user_name(me)} (who runs this) or root; "
                f"fix: chown {user_name(me)} {path}, after checking what is in it")
    if st.st_mode & 0o022 and not (others_may_write_dir and st.st_mode & stat.S_ISVTX):
        who = "group and others" if st.st_mode & 0o022 == 0o022 else "its group" if st.st_mode & 0o020 else "others"
        return (f"{what} {path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"fix: chmod go-w {path}, after checking what is in it")
    return None


def require_trusted_dir(path: str, st: os.stat_result, what: str = "directory") -> None:
    """`path` (lstat `st`) is a real directory owned by the user or root, writable by nobody else."""
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPath(
            f"{what} {path} is a symbolic link; the work directory and its manifests/ and backups/ must be "
            "real directories",
            hint=f"point WORK_DIR at the real directory, or replace the link: rm {path} && mkdir -m 0700 {path}",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(f"{what} {path} is not a directory", hint="move it away or choose another WORK_DIR")
    problem = _owner_problem(path, st, what)
    if problem:
        raise UntrustedPath(f"refusing to use {problem}",
                            hint="whoever can write there could steer a rollback; nothing was changed")


def require_trusted_file(path: str, st: os.stat_result, *, what: str = "manifest") -> None:
    """A file (fstat `st`) owned by the user or root, writable by nobody else."""
    problem = _owner_problem(path, st, what)
    if problem:
        raise UntrustedPath(f"refusing to use {problem}",
                            hint="use the manifest the run wrote in $WORK_DIR/manifests; nothing was changed")


def require_trusted_parent(path: str, *, what: str = "manifest directory") -> None:
    """The directory holding `path` is a real directory owned by the user or root, writable by nobody else."""
    directory = os.path.dirname(os.path.abspath(path))
    require_trusted_dir(directory, os.lstat(directory), what)
