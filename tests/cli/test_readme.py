"""The README's quick start and transcripts run as written (tools/readme.py; `make readme` rewrites them)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import ModuleType

from conftest import BIN, PROJECT

TOOL = PROJECT / "tools" / "readme.py"


def _readme_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_tool"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_readme_transcripts_are_what_the_tool_prints() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    tool = _readme_tool()
    blocks = tool.parse((PROJECT / "README.md").read_text())
    assert len(blocks) >= 8 and sum(len(b.commands) for b in blocks) >= 11, "the transcripts are still marked"


def test_a_transcript_matches_only_modulo_times_and_elisions() -> None:
    tool = _readme_tool()
    expected = ["passed: work/manifests/20261129T005406Z.json", "... (the rest)", "end"]
    assert tool.matches(expected, ["passed: work/manifests/20270101T000000Z.json", "a", "b", "end"])
    assert tool.matches(expected, ["passed: work/manifests/20270101T000000Z.json", "end"])
    assert not tool.matches(expected, ["passed: prod/manifests/20270101T000000Z.json", "end"])
    assert not tool.matches(expected, ["passed: work/manifests/20270101T000000Z.json", "a"])
    assert not tool.matches(["ok: [auth]"], ["ok: [auth]", "ok: [domain]"])
    assert tool.matches(["written: 2026-11-29T00:54:15Z duration_ms=1.0"],
                        ["written: 2027-01-01T10:00:00.123456Z duration_ms=871.8"])
    blocks = tool.parse("<!-- transcript\nhidden line\n-->\n```\n$ one\nout\n\n$ two\n```\n")
    assert [(b.hidden, [(c.line, c.output) for c in b.commands]) for b in blocks] == [
        ("hidden line\n", [("one", ["out", ""]), ("two", [])])]


def test_the_quick_start_demo_passes() -> None:
    """`make demo` is examples/demo.sh once the environment is there."""
    env = {**os.environ, "STORE_MIGRATE_BIN_DIR": str(BIN), "STORE_MIGRATE_LOG_FORMAT": "json"}
    done = subprocess.run(["bash", str(PROJECT / "examples" / "demo.sh")], env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "== drill passed: every store is back to its exact pre-run bytes"
    assert "stores unchanged on rerun: 3" in done.stdout
