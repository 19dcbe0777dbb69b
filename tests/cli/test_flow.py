"""The issue's acceptance flow, exactly as a pipeline runs it: wrappers, ls|sort|tail, jq, sha256sum."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import PROJECT, Stores

FLOW = r"""
set -euo pipefail
sha256sum "$AUTH_STORE_PATH" "$CODEX_THREAD_STORE_PATH" "$DOMAIN_STORE_PATH" > "$ROOT_DIR/before.sha256"
"$SCRIPTS/run-rust-ownership-backfill.sh" > "$ROOT_DIR/run.out"
manifest="$(ls -1 "$WORK_DIR"/manifests/*.json | sort | tail -n 1)"
grep -qx "\[rust-store-backfill\] manifest: $manifest" "$ROOT_DIR/run.out"
"$SCRIPTS/verify-rust-ownership-backfill.sh" "$manifest" | tail -n 1 | grep -qx "rust store backfill verification passed: $manifest"
test "$(jq -r .schema "$manifest")" = openagents.rust_store_migration.v1
test "$(jq -r '.stores[] | select(.store=="auth") | .counts.users' "$manifest")" = 2
test "$(jq -r '.stores[] | select(.store=="codex_threads") | .counts.messages' "$manifest")" = 2
test "$(jq -r '.stores[] | select(.store=="domain") | .counts.shouts' "$manifest")" = 2
! sha256sum --quiet -c "$ROOT_DIR/before.sha256" 2>/dev/null
"$SCRIPTS/rollback-rust-ownership-backfill.sh" "$manifest" | tail -n 1 | grep -qx "rollback completed using manifest: $manifest"
sha256sum -c "$ROOT_DIR/before.sha256"
"""


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (the pipeline's own tool)")
def test_pipeline_flow_with_the_wrappers(stores: Stores) -> None:
    stores.write_samples()
    done = subprocess.run(
        ["bash", "-c", FLOW], env={**stores.environ, "SCRIPTS": str(PROJECT / "scripts")},
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": OK") == 3


def test_wrapper_names_the_install_command_when_no_entry_point_is_found(stores: Stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lonely = tmp_path / "copy" / "scripts"
    shutil.copytree(PROJECT / "scripts", lonely)
    env = {k: v for k, v in stores.environ.items() if k != "STORE_MIGRATE_BIN_DIR"}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run([str(lonely / "run-rust-ownership-backfill.sh")], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    # A copy outside a checkout of store-migrate: no Makefile to run, so the wheel is named.
    assert "store-migrate-backfill not found on PATH; install store-migrate from its wheel" in done.stderr


def test_wrappers_pass_arguments_and_exit_codes_through(stores: Stores) -> None:
    stores.write_samples()
    stores.call(str(PROJECT / "scripts" / "run-rust-ownership-backfill.sh"), check=0)
    manifest = stores.newest_manifest()
    stores.paths["auth"].write_text("{}")
    rollback = str(PROJECT / "scripts" / "rollback-rust-ownership-backfill.sh")
    assert stores.call(rollback, str(manifest)).returncode == 1
    assert stores.call(rollback, str(manifest), "--force").returncode == 0
    assert stores.call(rollback, str(manifest), "--bogus").returncode == 2
