"""Where the stores and the work directory are, resolved from the environment.

The wrappers and `store-migrate` read the same variables with the same defaults, so a command
typed by hand and one run by a wrapper act on the same files:

- ROOT_DIR: default the git top level of the working directory, else the working directory;
- each store: its own variable (AUTH_STORE_PATH ...), else the service's (OA_AUTH_STORE_PATH ...),
  else $ROOT_DIR/apps/openagents.com/storage/app/<default file name>;
- WORK_DIR: default $ROOT_DIR/apps/openagents.com/storage/app/rust-store-migrate.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from .stores import all_kinds

STORAGE_SUBDIR = os.path.join("apps", "openagents.com", "storage", "app")


@dataclass(frozen=True)
class StorePath:
    kind: str
    path: str
    source: str
    """Which variable (or default) gave the path, for logs and error messages."""


@dataclass(frozen=True)
class Settings:
    root_dir: str
    work_dir: str
    stores: tuple[StorePath, ...]

    @property
    def manifests_dir(self) -> str:
        return os.path.join(self.work_dir, "manifests")

    @property
    def backups_root(self) -> str:
        return os.path.join(self.work_dir, "backups")


def _git_top_level(cwd: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd, capture_output=True, text=True, check=False,
        )
    except FileNotFoundError:
        return None
    top = done.stdout.strip()
    return top if done.returncode == 0 and top else None


def resolve(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Settings:
    env = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    root = env.get("ROOT_DIR") or _git_top_level(cwd) or cwd
    root = os.path.abspath(os.path.join(cwd, root))
    storage = os.path.join(root, STORAGE_SUBDIR)
    stores = []
    for kind in all_kinds():
        if env.get(kind.env_var):
            path, source = env[kind.env_var], kind.env_var
        elif env.get(kind.service_env_var):
            path, source = env[kind.service_env_var], kind.service_env_var
        else:
            path, source = os.path.join(storage, kind.default_file), "default"
        stores.append(StorePath(kind.name, os.path.abspath(os.path.join(cwd, path)), source))
    work = env.get("WORK_DIR") or os.path.join(storage, "rust-store-migrate")
    return Settings(root, os.path.abspath(os.path.join(cwd, work)), tuple(stores))
