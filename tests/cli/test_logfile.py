"""Logs an operator reads: --log-file (and STORE_MIGRATE_LOG_FILE), failures as `error` events,
colour only where wanted, durations to 0.1 ms, and what a run waiting for the lock says."""

from __future__ import annotations

import json
import os
import pty
import pwd
import select
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, RUN, VERIFY, Stores

from store_migrate.fs import lock


def events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    assert lines, f"{path} is empty"
    return [json.loads(line) for line in lines]  # every line is JSON


def test_log_file_takes_every_log_line_and_stderr_keeps_the_drop_in_lines(stores: Stores) -> None:
    stores.write_samples()
    log = stores.root / "logs" / "run.jsonl"  # its directory is made too
    done = stores.call(RUN, "--log-file", str(log), check=0)
    assert done.stderr == "" and "[rust-store-backfill] manifest:" in done.stdout
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and log.stat().st_nlink == 1
    first = events(log)
    assert "store.replaced" in {e["event"] for e in first}
    manifest = str(stores.newest_manifest())
    stores.call(VERIFY, manifest, env={"STORE_MIGRATE_LOG_FILE": str(log)}, check=0)  # appended
    both = events(log)
    assert both[:len(first)] == first and "store.verified" in {e["event"] for e in both[len(first):]}
    missing = stores.call("store-migrate", "verify", "/nowhere/m.json", "--log-file", str(log), check=1)
    assert missing.stderr == "error: manifest not found: /nowhere/m.json\n"
    assert events(log)[-1] == {**events(log)[-1], "event": "error", "level": "error",
                               "message": "manifest not found: /nowhere/m.json", "hint": None, "exit_code": 1}


def test_failures_are_error_events_with_message_and_hint(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    stores.paths["auth"].write_text("{}")
    log = stores.root / "verify.jsonl"
    done = stores.call("store-migrate", "verify", str(manifest), "--log-file", str(log), check=1)
    assert not any(line.startswith("{") for line in done.stderr.splitlines())
    assert f"error: rust store backfill verification failed: {manifest}" in done.stderr
    error = events(log)[-1]
    assert error["event"] == "error" and error["message"] == f"rust store backfill verification failed: {manifest}"
    assert error["hint"].startswith("do not move traffic") and f"  next: {error['hint']}" in done.stderr
    on_stderr = stores.call("store-migrate", "verify", "/nowhere/m.json", check=1)  # JSON logs on stderr: the event too
    assert on_stderr.stderr.splitlines()[0] == "error: manifest not found: /nowhere/m.json"
    assert json.loads(on_stderr.stderr.splitlines()[-1])["event"] == "error"


def _refused(stores: Stores, log: Path) -> str:
    done = stores.call("store-migrate", "check", "--kind", "auth", str(stores.paths["auth"]), "--log-file", str(log),
                       check=1)
    assert done.stdout == ""  # refused before the command ran
    return done.stderr


def test_log_file_never_through_a_link_nor_into_someone_elses_file(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    precious = tmp_path / "precious"
    precious.write_text("keep\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(precious)
    assert "it is a symbolic link" in _refused(stores, link)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "it is a symbolic link" in _refused(stores, dangling) and not (tmp_path / "nowhere").exists()
    hard = tmp_path / "hard.jsonl"
    os.link(precious, hard)
    assert "2 names (hard links)" in _refused(stores, hard)
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text("")
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    assert "it is owned by nobody" in _refused(stores, theirs)
    shared = tmp_path / "shared.jsonl"
    shared.write_text("")
    shared.chmod(0o620)
    assert "writable by others than its owner (mode 0620)" in _refused(stores, shared)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert "not a regular file" in _refused(stores, fifo) and time.monotonic() - started < 30
    assert "not a regular file" in _refused(stores, tmp_path)
    (stores.work / "manifests").mkdir(parents=True)
    assert "into a manifests/ directory" in _refused(stores, stores.work / "manifests" / "run.log")
    assert precious.read_text() == "keep\n" and theirs.read_text() == shared.read_text() == ""
    assert not (stores.work / "manifests" / "run.log").exists()


def test_durations_are_rounded_to_a_tenth_of_a_millisecond(tmp_path: Path) -> None:
    import structlog

    from store_migrate import logs

    log = tmp_path / "library.jsonl"
    logs.configure("json", log_file=str(log))
    structlog.get_logger("store_migrate").info("store.read", duration_ms=871.8000000000001, waited_ms=0.25 + 0.1,
                                                bytes=3)
    (event,) = events(log)
    assert event["duration_ms"] == 871.8 and event["waited_ms"] == 0.3 and event["bytes"] == 3
    assert '"duration_ms": 871.8,' in log.read_text()


def test_every_duration_of_a_run_has_at_most_one_decimal(stores: Stores) -> None:
    stores.write_samples()
    log = stores.root / "run.jsonl"
    stores.call(RUN, "--log-file", str(log), check=0)
    stores.call(VERIFY, str(stores.newest_manifest()), "--strict", "--additive", "--log-file", str(log), check=0)
    durations = [(e["event"], v) for e in events(log) for k, v in e.items() if k.endswith("_ms")]
    assert durations and all(len(repr(v).partition(".")[2]) <= 1 for _, v in durations), durations


def console_stderr(stores: Stores, env: dict[str, str]) -> str:
    """stderr of a command whose stderr is a terminal (console logs), as the terminal got it."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(BIN / "store-migrate"), "check", "--kind", "auth", str(stores.paths["auth"])],
            env={**stores.environ, "STORE_MIGRATE_LOG_FORMAT": "auto", **env}, cwd=stores.root,
            stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL)
        os.close(terminal)
        output = b""
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, "no output from the command"
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=60) == 0
        assert process.stdout is not None and process.stdout.read().startswith(b"readable: ")
    finally:
        os.close(controller)
    return output.decode()


def test_console_logs_honour_no_color_and_a_dumb_terminal(stores: Stores) -> None:
    stores.write("auth", {})
    coloured = console_stderr(stores, {"TERM": "xterm-256color"})
    assert "store.validated" in coloured and "\x1b[" in coloured
    for env in ({"TERM": "xterm-256color", "NO_COLOR": "1"}, {"TERM": "dumb"}):
        plain = console_stderr(stores, env)
        assert "store.validated" in plain and "\x1b[" not in plain, env


@pytest.mark.parametrize("timeout", ["0.6"])
def test_a_run_waiting_for_the_lock_says_on_whom_and_how_long_once(stores: Stores, timeout: str) -> None:
    stores.write_samples()
    log = stores.root / "wait.jsonl"
    with lock.locked([str(p) for p in stores.paths.values()], timeout=0):
        done = stores.call("store-migrate", "run", "--lock-timeout", timeout, "--log-file", str(log), check=1)
    logged = events(log)
    (waiting,) = [e for e in logged if e["event"] == "lock.waiting"]
    assert waiting["level"] == "warning" and waiting["holder_pid"] == os.getpid()
    assert waiting["holder"].startswith(f"pid {os.getpid()} (") and waiting["holder_command"]
    assert waiting["timeout_s"] == float(timeout)
    assert waiting["directory"] == str(stores.paths["auth"].parent)
    assert sorted(waiting["stores"]) == sorted(str(p) for p in stores.paths.values())
    assert logged[-1]["event"] == "error" and f"is locked by pid {os.getpid()}" in logged[-1]["message"]
    assert done.stderr.startswith("error: store ") and "{" not in done.stderr
    stores.call("store-migrate", "run", "--lock-timeout", timeout, "--log-file", str(log), check=0)
    assert len([e for e in events(log) if e["event"] == "lock.waiting"]) == 1  # a free lock: no wait said
