"""A real deployment: the wrappers in the service's own checkout (no .git), missing stores, a
closed stdout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, EXAMPLES, PROJECT, RUN, SCRIPTS, STORE_FILES, STORE_VARS, Stores, load_json, log_events

from store_migrate.core import config

SERVICE_SCRIPTS = Path("apps", "openagents.com", "service", "scripts")
STORAGE = Path("apps", "openagents.com", "storage", "app")


def _clean_environ() -> dict[str, str]:
    """The environment of a deploy pipeline: no store, work or root variable; the entry points
    found through STORE_MIGRATE_BIN_DIR (the service's checkout has no .venv)."""
    environ = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("OA_", "STORE_MIGRATE_")) and key not in (*STORE_VARS.values(), "WORK_DIR", "ROOT_DIR")
    }
    environ.update(STORE_MIGRATE_BIN_DIR=str(BIN), STORE_MIGRATE_LOG_FORMAT="json")
    return environ


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fake service checkout without .git: <tmp>/srv/app with the wrappers (and scripts/lib)
    where the earlier ones lived, and the sample stores where the service keeps them."""
    root = tmp_path / "srv" / "app"
    shutil.copytree(SCRIPTS, root / SERVICE_SCRIPTS)
    (root / STORAGE).mkdir(parents=True)
    for name in STORE_FILES.values():
        shutil.copyfile(EXAMPLES / name, root / STORAGE / name)
    (root / "apps" / "openagents.com" / "service" / "src").mkdir()
    return root


def _wrapper(root: Path, name: str) -> str:
    return str(root / SERVICE_SCRIPTS / name)


def _run(command: list[str], cwd: Path | str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("where", ["/", "root", "subdirectory", "a git checkout elsewhere"])
def test_wrappers_in_the_service_layout_work_on_that_checkout_from_anywhere(checkout: Path, where: str) -> None:
    cwd = {"/": Path("/"), "root": checkout, "subdirectory": checkout / "apps" / "openagents.com" / "service" / "src",
           "a git checkout elsewhere": PROJECT}[where]
    assert not (checkout / ".git").exists()
    strays = Path("/apps/openagents.com/storage/app")
    existed = strays.exists()
    env = _clean_environ()
    storage = checkout / STORAGE
    dry = _run([_wrapper(checkout, "run-rust-ownership-backfill.sh")], cwd, {**env, "DRY_RUN": "1"})
    assert dry.returncode == 0, dry.stderr
    assert f"dry run: [auth] {storage / STORE_FILES['auth']} (exists, 1131 bytes)" in dry.stdout
    origin = f"default under ROOT_DIR {checkout}, from the wrapper's location ({checkout / SERVICE_SCRIPTS})"
    assert dry.stdout.count(f"  path from: {origin}") == 3

    done = _run([_wrapper(checkout, "run-rust-ownership-backfill.sh")], cwd, env)
    assert done.returncode == 0, done.stderr
    manifests = sorted((storage / "rust-store-migrate" / "manifests").glob("*.json"))
    assert len(manifests) == 1
    assert f"[rust-store-backfill] manifest: {manifests[0]}" in done.stdout
    assert [e["path"] for e in load_json(manifests[0])["stores"]] == [str(storage / n) for n in STORE_FILES.values()]
    located = [e for e in log_events(done.stderr) if e["event"] == "store.located"]
    assert [(e["store"], e["path"], e["source"], e["level"]) for e in located] == [
        (kind, str(storage / name), origin, "info") for kind, name in STORE_FILES.items()
    ]
    assert not any(e["event"] == "store.missing" for e in log_events(done.stderr))
    verify = _run([_wrapper(checkout, "verify-rust-ownership-backfill.sh"), str(manifests[0])], cwd, env)
    assert verify.returncode == 0, verify.stderr
    rollback = _run([_wrapper(checkout, "rollback-rust-ownership-backfill.sh"), str(manifests[0])], cwd, env)
    assert rollback.returncode == 0, rollback.stderr
    assert (storage / STORE_FILES["auth"]).read_bytes() == (EXAMPLES / STORE_FILES["auth"]).read_bytes()
    assert strays.exists() == existed, "nothing may be created under /apps"


def test_the_wrapper_s_location_wins_over_root_dir_and_a_relative_call_works(checkout: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**_clean_environ(), "ROOT_DIR": str(elsewhere)}
    done = _run([str(SERVICE_SCRIPTS / "run-rust-ownership-backfill.sh")], checkout, env)
    assert done.returncode == 0, done.stderr
    resolved = next(e for e in log_events(done.stderr) if e["event"] == "config.resolved")
    assert resolved["root_dir"] == str(checkout) and resolved["root_source"].startswith("the wrapper's location")
    assert list(elsewhere.iterdir()) == []


def test_elsewhere_root_dir_then_git_then_cwd(stores: Stores, tmp_path: Path) -> None:
    """This project's own scripts/ is not the service layout: ROOT_DIR, else git, else the cwd."""
    plain = tmp_path / "plain"
    plain.mkdir()
    env = {var: "" for var in (*STORE_VARS.values(), "WORK_DIR", "ROOT_DIR")}
    environ = {**stores.environ, **env}
    for cwd, root, source in ((plain, plain, "the working directory"), (PROJECT, None, "the git top level")):
        done = _run([RUN, "--dry-run", "--allow-missing"], cwd, environ)
        assert done.returncode == 0, done.stderr
        resolved = next(e for e in log_events(done.stderr) if e["event"] == "config.resolved")
        assert resolved["root_source"].startswith(source)
        if root is not None:
            assert resolved["root_dir"] == str(root)
    done = _run([RUN, "--dry-run", "--allow-missing"], plain, {**environ, "ROOT_DIR": str(stores.root)})
    assert next(e for e in log_events(done.stderr) if e["event"] == "config.resolved")["root_dir"] == str(stores.root)


def test_service_root_is_found_only_at_the_service_layout() -> None:
    assert config.service_root("/srv/app/apps/openagents.com/service/scripts") == "/srv/app"
    assert config.service_root("/apps/openagents.com/service/scripts/") == "/"
    for other in ("/srv/app/scripts", "/srv/app/apps/openagents.com/service", "apps/openagents.com/service/scripts",
                  "/srv/app/apps/other.com/service/scripts", "/x/apps/openagents.com/service/scripts/lib"):
        assert config.service_root(other) is None, other


# ------------------------------------------------------------------------- missing stores


def test_no_store_at_all_is_refused_naming_the_paths_and_their_sources(stores: Stores) -> None:
    env = {"AUTH_STORE_PATH": "", "OA_AUTH_STORE_PATH": str(stores.root / "oa-auth.json")}
    for extra in ((), ("--dry-run",)):
        done = stores.call(RUN, *extra, "-q", env=env, check=1)
        assert "error: no store file exists, refusing to create 3 new empty stores:" in done.stderr
        assert f"  [auth] {stores.root / 'oa-auth.json'} (OA_AUTH_STORE_PATH)" in done.stderr
        for kind in ("codex_threads", "domain"):
            assert f"  [{kind}] {stores.paths[kind]} ({STORE_VARS[kind]})" in done.stderr
        assert "next: " in done.stderr and "--allow-missing" in done.stderr
        missing = [e for e in log_events(done.stderr) if e["event"] == "store.missing"]
        assert [(e["store"], e["level"]) for e in missing] == [(k, "warning") for k in STORE_FILES]
        assert not stores.work.exists() and stores.hashes() == dict.fromkeys(STORE_FILES)
    stores.call(RUN, "--allow-missing", check=0)
    assert [e["existed"] for e in load_json(stores.newest_manifest())["stores"]] == [False, False, False]


def test_allow_missing_from_the_environment_and_one_missing_store_is_a_warning(stores: Stores) -> None:
    stores.call(RUN, "--dry-run", env={"ALLOW_MISSING": "1"}, check=0)
    stores.write_samples()
    stores.paths["domain"].unlink()
    done = stores.call(RUN, "-q", check=0)
    missing = [e for e in log_events(done.stderr) if e["event"] == "store.missing"]
    assert len(missing) == 1
    assert (missing[0]["store"], missing[0]["path"], missing[0]["source"], missing[0]["level"]) == (
        "domain", str(stores.paths["domain"]), "DOMAIN_STORE_PATH", "warning")


# ----------------------------------------------------------------------- closed stdout


def test_a_completed_run_exits_0_when_stdout_is_closed(stores: Stores) -> None:
    stores.write_samples()
    process = subprocess.Popen([RUN], env=stores.environ, cwd=stores.root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # nobody reads: the first line printed meets EPIPE
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 0, stderr
    manifest = stores.newest_manifest()
    assert load_json(manifest)["status"] == "complete"
    closed = [e for e in log_events(stderr) if e["event"] == "stdout.closed"]
    assert len(closed) == 1 and closed[0]["level"] == "warning"
    assert f"[rust-store-backfill] manifest: {manifest}" in closed[0]["unprinted"]
    assert "Traceback" not in stderr and "error:" not in stderr
    pipeline = subprocess.run(["bash", "-c", f"set -o pipefail; {RUN} | head -n 1"], env=stores.environ,
                              cwd=stores.root, capture_output=True, text=True, check=False, timeout=120)
    assert pipeline.returncode == 0, pipeline.stderr
    assert pipeline.stdout.startswith("rust-store-migrate: wrote manifest to ")


def test_verify_keeps_its_verdict_when_stdout_is_closed(stores: Stores) -> None:
    stores.write_samples()
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    for damage, code in ((False, 0), (True, 1)):
        if damage:
            stores.paths["auth"].write_text("{}")
        process = subprocess.Popen([str(BIN / "store-migrate-verify"), manifest], env=stores.environ,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == code, stderr
        assert "Traceback" not in stderr
