"""Where the stores and the work directory are, resolved from the environment, and whether they
are there at all.

The wrappers and `store-migrate` read the same variables with the same defaults, so a command
typed by hand and one run by a wrapper act on the same files:

- ROOT_DIR: when the wrapper that started us sits at <root>/apps/openagents.com/service/scripts/
  (where the earlier wrappers lived; the wrappers pass their own directory in
  STORE_MIGRATE_WRAPPER_DIR), <root>, whatever the working directory and whether or not there is
  a .git, as the earlier wrappers computed it; elsewhere $ROOT_DIR, else the git top level of the
  working directory, else the working directory;
- each store: its own variable (AUTH_STORE_PATH ...), else the service's (OA_AUTH_STORE_PATH ...),
  else $ROOT_DIR/apps/openagents.com/storage/app/<default file name>;
- WORK_DIR: default $ROOT_DIR/apps/openagents.com/storage/app/rust-store-migrate.

A store that does not exist is created by a run, so a wrong root would quietly make three empty
stores: each missing store is a warning, and a run that finds none at all refuses unless told
that this is a new environment (`check_present`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from store_migrate.core.stores import all_kinds
from store_migrate.errors import ConfigError

log = structlog.get_logger("store_migrate")

STORAGE_SUBDIR = os.path.join("apps", "openagents.com", "storage", "app")
SERVICE_SCRIPTS_SUBDIR = os.path.join("apps", "openagents.com", "service", "scripts")
"""Where the earlier wrappers lived in the service's checkout, relative to its root."""
WRAPPER_DIR_VAR = "STORE_MIGRATE_WRAPPER_DIR"
"""Set by the wrappers (scripts/*.sh) to the directory they sit in."""


@dataclass(frozen=True)
class StorePath:
    kind: str
    path: str
    source: str
    """Which variable (or "default") gave the path, for logs and error messages."""


@dataclass(frozen=True)
class Settings:
    root_dir: str
    work_dir: str
    stores: tuple[StorePath, ...]
    root_source: str = "ROOT_DIR"
    """Where root_dir came from: the wrapper's location, ROOT_DIR, the git top level or the
    working directory."""
    work_source: str = "WORK_DIR"

    def origin(self, source: str) -> str:
        """A path's source as an operator reads it: the variable, or the default and where its
        ROOT_DIR came from."""
        return f"default under ROOT_DIR {self.root_dir}, from {self.root_source}" if source == "default" else source


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


def service_root(wrapper_dir: str) -> str | None:
    """<root> when `wrapper_dir` is <root>/apps/openagents.com/service/scripts, else None."""
    directory = os.path.normpath(wrapper_dir)
    if not os.path.isabs(directory):
        return None
    root = directory
    for expected in reversed(SERVICE_SCRIPTS_SUBDIR.split(os.sep)):
        root, name = os.path.split(root)
        if name != expected:
            return None
    return root


def _root(env: Mapping[str, str], cwd: str) -> tuple[str, str]:
    wrapper_dir = env.get(WRAPPER_DIR_VAR)
    root = service_root(wrapper_dir) if wrapper_dir else None
    if root is not None:
        return root, f"the wrapper's location ({wrapper_dir})"
    if env.get("ROOT_DIR"):
        return os.path.abspath(os.path.join(cwd, env["ROOT_DIR"])), "ROOT_DIR"
    top = _git_top_level(cwd)
    if top is not None:
        return os.path.abspath(top), f"the git top level of the working directory {cwd}"
    return os.path.abspath(cwd), "the working directory (no ROOT_DIR, no git checkout)"


def resolve(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Settings:
    env = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    root, root_source = _root(env, cwd)
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
    work, work_source = (env["WORK_DIR"], "WORK_DIR") if env.get("WORK_DIR") else (
        os.path.join(storage, "rust-store-migrate"), "default")
    return Settings(root, os.path.abspath(os.path.join(cwd, work)), tuple(stores), root_source, work_source)


def check_present(settings: Settings, *, allow_missing: bool = False) -> list[StorePath]:
    """Log where every store is and where that came from; warn about each missing store; refuse
    (ConfigError) when none exists, unless `allow_missing` says this is a new environment.
    Returns the missing stores."""
    log.info("config.resolved", root_dir=settings.root_dir, root_source=settings.root_source,
             work_dir=settings.work_dir, work_source=settings.origin(settings.work_source))
    missing = []
    for store in settings.stores:
        exists = os.path.exists(store.path)
        log.info("store.located", store=store.kind, path=store.path, source=settings.origin(store.source),
                 exists=exists)
        if not exists:
            missing.append(store)
            log.warning("store.missing", store=store.kind, path=store.path, source=settings.origin(store.source),
                        allow_missing=allow_missing)
    if missing and len(missing) == len(settings.stores) and not allow_missing:
        where = "\n".join(f"  [{s.kind}] {s.path} ({settings.origin(s.source)})" for s in settings.stores)
        raise ConfigError(
            f"no store file exists, refusing to create {len(missing)} new empty stores:\n{where}",
            hint="point ROOT_DIR (or the store variables) at the service's stores; for a new environment "
            "whose stores do not exist yet, pass --allow-missing (ALLOW_MISSING=1)",
        )
    return missing
