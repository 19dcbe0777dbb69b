"""The schema files ship inside the package, so a plain (non-editable) install works."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import PROJECT


def test_wheel_contains_every_schema_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
         "-w", str(tmp_path), str(PROJECT)],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob("store_migrate-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"store_migrate/schemas/{p.name}" for p in (PROJECT / "schemas").glob("*.schema.json")}
    assert len(expected) == 4 and expected <= names
