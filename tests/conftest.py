"""Shared helpers: stores in temporary directories and the real entry points as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Timings on a shared 2-core machine vary by 10x; a deadline would only measure the neighbours.
settings.register_profile("store-migrate", deadline=None)
settings.load_profile("store-migrate")

PROJECT = Path(__file__).resolve().parents[1]

# The tests mirror the code: unit/ (one file per module), cli/ (behaviour through the wrappers and
# the CLI), safety/ (attacks, faults, signals, ownership). A few share fixtures and strategies
# (test_safety's big stores, test_properties' JSON values): each folder is importable from the others.
for _group in ("unit", "cli", "safety"):
    sys.path.insert(0, str(Path(__file__).resolve().parent / _group))
SCRIPTS = PROJECT / "scripts"
EXAMPLES = PROJECT / "examples" / "stores"
GOLDEN = Path(__file__).resolve().parent / "golden"
BIN = Path(sys.executable).parent

RUN = str(SCRIPTS / "run-rust-ownership-backfill.sh")
VERIFY = str(SCRIPTS / "verify-rust-ownership-backfill.sh")
ROLLBACK = str(SCRIPTS / "rollback-rust-ownership-backfill.sh")

STORE_FILES = {
    "auth": "rust-auth-store.json",
    "codex_threads": "rust-codex-thread-store.json",
    "domain": "rust-domain-store.json",
}
STORE_VARS = {
    "auth": "AUTH_STORE_PATH",
    "codex_threads": "CODEX_THREAD_STORE_PATH",
    "domain": "DOMAIN_STORE_PATH",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Stores:
    """Three store paths and a work directory under one temporary root, plus the environment
    that points the wrappers and the CLI at them."""

    root: Path
    work: Path
    paths: dict[str, Path]
    environ: dict[str, str] = field(default_factory=dict)

    def write(self, kind: str, content: bytes | str | Any) -> Path:
        path = self.paths[kind]
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            content = json.dumps(content).encode()
        path.write_bytes(content)
        return path

    def write_samples(self) -> None:
        for kind, name in STORE_FILES.items():
            shutil.copyfile(EXAMPLES / name, self.paths[kind])

    def hashes(self) -> dict[str, str | None]:
        return {k: sha256(p) if p.exists() else None for k, p in self.paths.items()}

    def manifests(self) -> list[Path]:
        directory = self.work / "manifests"
        return sorted(directory.glob("*.json")) if directory.exists() else []

    def newest_manifest(self) -> Path:
        return self.manifests()[-1]

    def call(self, *args: str, env: dict[str, str] | None = None, check: int | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command (a wrapper or an entry point) in this environment."""
        if not args[0].startswith("/"):
            args = (str(BIN / args[0]), *args[1:])
        done = subprocess.run(
            args, env={**self.environ, **(env or {})}, cwd=self.root,
            capture_output=True, text=True, check=False, timeout=120,
        )
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done


@pytest.fixture
def stores(tmp_path: Path) -> Stores:
    root = tmp_path / "service"
    storage = root / "storage"
    storage.mkdir(parents=True)
    paths = {kind: storage / name for kind, name in STORE_FILES.items()}
    work = root / "migrate-work"
    environ = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("OA_", "STORE_MIGRATE_")) and key not in (*STORE_VARS.values(), "WORK_DIR", "ROOT_DIR")
    }
    environ.update({STORE_VARS[k]: str(p) for k, p in paths.items()})
    environ.update(
        WORK_DIR=str(work), ROOT_DIR=str(root), STORE_MIGRATE_BIN_DIR=str(BIN),
        STORE_MIGRATE_LOG_FORMAT="json",
    )
    return Stores(root, work, paths, environ)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def log_events(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line that is a JSON log event (the rest are `error:` lines)."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@pytest.fixture(autouse=True)
def _quiet_library_logs() -> None:
    """Library calls made in-process log at warning level and above only (CLI runs are separate)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
