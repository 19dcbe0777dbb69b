"""Messages say what is true: a missing file is not found, a refused rollback's report says it
was refused and why, and the temporary files a stopped run left are named by whoever sees them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import ROLLBACK, RUN, VERIFY, Stores, log_events


def test_check_says_a_missing_file_is_not_found(stores: Stores, tmp_path: Path) -> None:
    missing = tmp_path / "gone.json"
    empty = tmp_path / "empty.json"
    empty.write_text("")
    done = stores.call("store-migrate", "check", "--kind", "auth", str(missing), str(empty), check=1)
    assert done.stdout.splitlines() == [
        f"not readable: {missing} (auth): not found",
        f"not readable: {empty} (auth): the file is empty (the service cannot parse it)",
    ]
    assert "record(s)" not in done.stdout


def test_a_refused_rollback_writes_a_report_that_says_so(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    stores.write("domain", {"written": "by the service after the migration"})
    live = stores.hashes()
    report = tmp_path / "drill.md"
    done = stores.call(ROLLBACK, str(manifest), "--report", str(report), check=1)
    assert "error: rollback refused, nothing was changed:" in done.stderr.splitlines()
    assert stores.hashes() == live and stat.S_IMODE(report.stat().st_mode) == 0o600
    text = report.read_text()
    assert text.startswith("# Store rollback drill: REFUSED\n")
    assert f"- manifest: `{manifest}`" in text and "## Refused: nothing was changed" in text
    assert f"- [domain] {stores.paths['domain']} was written after the migration" in text
    assert "by the service" not in text  # never store content
    failed = stores.call(ROLLBACK, "/nowhere/m.json", "--report", str(report), check=1)
    assert "error: manifest not found: /nowhere/m.json" in failed.stderr
    assert report.read_text().startswith("# Store rollback drill: FAILED\n")
    assert "- manifest not found: /nowhere/m.json" in report.read_text()


def test_a_refused_rollback_report_never_follows_a_link(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    stores.write("domain", {"written": "later"})
    precious = tmp_path / "precious"
    precious.write_text("keep\n")
    report = tmp_path / "drill.md"
    report.symlink_to(precious)
    done = stores.call(ROLLBACK, str(manifest), "--report", str(report), check=1)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert lines[0] == f"error: refusing to write report {report}: it is a symbolic link"
    assert any(line.startswith("error: rollback refused, nothing was changed:") for line in lines)  # still told
    assert precious.read_text() == "keep\n" and report.is_symlink()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_leftover_temporary_files_are_named_by_the_next_command_that_sees_them(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    pid = dead_pid()
    beside = stores.paths["auth"].parent / f".{stores.paths['auth'].name}.store-migrate-tmp-{pid}-0123abcd"
    in_work = stores.work / "backups" / f".early-auth.store-migrate-tmp-{pid}-4567cdef"
    alive = stores.paths["auth"].parent / f".{stores.paths['auth'].name}.store-migrate-tmp-{os.getpid()}-89abcdef"
    for temp in (beside, in_work, alive):
        temp.write_bytes(b"half a store")
    named = f"warning: 2 temporary file(s) left by a stopped run: {beside}, {in_work}; the next run removes them"
    for command in ((VERIFY, manifest), ("store-migrate", "run", "--dry-run")):
        done = stores.call(*command, check=0)
        assert [line for line in done.stderr.splitlines() if not line.startswith("{")] == [named], command
        leftover = [e["path"] for e in log_events(done.stderr) if e["event"] == "temp.leftover"]
        assert leftover == [str(beside), str(in_work)] and all(e["level"] == "warning" for e in log_events(
            done.stderr) if e["event"] == "temp.leftover")
    checked = stores.call("store-migrate", "check", "--kind", "auth", str(stores.paths["auth"]), check=0)
    assert [line for line in checked.stderr.splitlines() if not line.startswith("{")] == [
        f"warning: 1 temporary file(s) left by a stopped run: {beside}; the next run removes them"]
    assert beside.exists() and in_work.exists() and alive.exists()  # only looked at
    rolled = stores.call(ROLLBACK, manifest, check=0)
    told = [line for line in rolled.stderr.splitlines() if not line.startswith("{")]
    assert told == [f"warning: removed 1 temporary file(s) left by a stopped run: {beside}",
                    f"warning: 1 temporary file(s) left by a stopped run: {in_work}; the next run removes them"]
    assert not beside.exists() and not alive.exists() and in_work.exists()  # beside the stores, under their lock
    stores.call(RUN, check=0)
    assert not in_work.exists()
