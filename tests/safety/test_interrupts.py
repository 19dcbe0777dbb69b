"""Interrupted runs, like a journal: a signal puts back what was replaced; a run killed outright
leaves a pending manifest that the next run recovers before it migrates; verify and rollback do
not build on a run that did not finish."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import ROLLBACK, RUN, VERIFY, Stores, load_json, log_events
from test_safety import big_stores, copy_big, spawn_run, temp_files, timed_clean_run  # noqa: F401 (big_stores is a fixture)

from store_migrate.commands import run as cmd_run
from store_migrate.core import config
from store_migrate.core.manifest import COMPLETE, PENDING, REVERTED
from store_migrate.fs import durable
from store_migrate.fs.interrupts import Interrupted


def test_signals_at_moments_spread_over_a_run_leave_all_or_nothing(stores: Stores, big_stores: Path) -> None:  # noqa: F811
    pre, post, duration = timed_clean_run(stores, big_stores)
    outcomes = []
    for i in range(1, 15):
        copy_big(big_stores, stores)
        sent = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)[i % 3]
        process = spawn_run(stores)
        time.sleep(duration * i / 10)  # the last ones usually land after the end
        process.send_signal(sent)
        out, err = process.communicate(timeout=120)
        manifests = stores.manifests()
        status = load_json(manifests[-1])["status"] if manifests else None
        outcomes.append((process.returncode, status))
        assert temp_files(stores.root) == [], f"{sent.name} at {i}/12"
        if process.returncode in (0, -sent):  # done; killed while the interpreter was exiting at most
            assert stores.hashes() == post and status == COMPLETE, err
            continue
        assert process.returncode == 128 + sent, err
        assert f"error: interrupted by {sent.name}" in err and "Traceback" not in err
        assert stores.hashes() == pre, f"{sent.name} at {i}/12: every store is back to its pre-run bytes"
        assert status in (None, REVERTED)
        if manifests:
            assert (stores.work / "backups" / manifests[-1].stem).is_dir()
        elif (stores.work / "backups").exists():
            assert list((stores.work / "backups").iterdir()) == [], "no backups without a manifest"
    assert any(code != 0 for code, _ in outcomes), outcomes


def test_a_signal_between_two_replacements_puts_the_first_back(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    stores.write_samples()
    pre = stores.hashes()
    renames = []
    original = durable.rename

    def rename_then_signal(source: str, target: str) -> None:
        original(source, target)
        renames.append(target)
        if len(renames) == 2:  # auth and codex_threads replaced
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(durable, "rename", rename_then_signal)
    settings = config.resolve(environ=stores.environ, cwd=str(stores.root))
    with pytest.raises(Interrupted) as stopped:
        cmd_run.run(settings)
    assert stopped.value.exit_code == 143 and "put back" in stopped.value.message
    assert stores.hashes() == pre
    assert load_json(stores.newest_manifest())["status"] == REVERTED
    assert temp_files(stores.root) == []
    assert signal.getsignal(signal.SIGTERM) is not None


def kill_mid_run(stores: Stores) -> Path:
    """The state a run killed after replacing the auth store leaves: auth migrated, the other
    stores not, the manifest pending."""
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    document = load_json(manifest)
    document["status"] = PENDING
    manifest.write_text(json.dumps(document))
    for entry in document["stores"][1:]:
        stores.paths[entry["store"]].write_bytes(Path(entry["backup_path"]).read_bytes())
    return manifest


def test_the_next_run_recovers_a_run_that_was_killed(stores: Stores) -> None:
    pending = kill_mid_run(stores)
    original = {e["store"]: Path(e["backup_path"]).read_bytes() for e in load_json(pending)["stores"]}
    done = stores.call(RUN, check=0)
    events = [e for e in log_events(done.stderr) if e["event"] == "run.recovered"]
    assert len(events) == 1 and events[0]["manifest"] == str(pending)
    assert events[0]["restored"] == [str(stores.paths["auth"])]
    assert load_json(pending)["status"] == REVERTED
    newest = stores.newest_manifest()
    assert newest != pending and load_json(newest)["status"] == COMPLETE
    stores.call(ROLLBACK, str(newest), check=0)
    assert {k: p.read_bytes() for k, p in stores.paths.items()} == original


def test_verify_and_rollback_of_an_older_manifest_refuse_while_a_newer_run_is_pending(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    older = stores.newest_manifest()
    stores.paths["domain"].write_text('{"shouts": [{"id": 3}]}')
    stores.call(RUN, check=0)
    newer = stores.newest_manifest()
    document = load_json(newer)
    document["status"] = PENDING
    newer.write_text(json.dumps(document))
    done = stores.call(VERIFY, str(older), check=1)
    assert f"manifest {newer} is pending" in done.stderr
    current = stores.hashes()
    done = stores.call(ROLLBACK, str(older), "--force", check=1)
    assert f"manifest {newer} is pending" in done.stderr and stores.hashes() == current
    stores.call(ROLLBACK, str(newer), check=0)  # rolling the pending run back completes it
    assert load_json(newer)["status"] == REVERTED


def test_a_pending_run_whose_store_was_written_since_stops_the_next_run(stores: Stores) -> None:
    pending = kill_mid_run(stores)
    stores.paths["auth"].write_text('{"written": "by the service since"}')
    current = stores.hashes()
    done = stores.call(RUN, check=1)
    assert f"left manifest {pending} pending, and it cannot be recovered safely" in done.stderr
    assert stores.hashes() == current and load_json(pending)["status"] == PENDING
    assert stores.newest_manifest() == pending
