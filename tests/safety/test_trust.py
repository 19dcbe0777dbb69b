"""Trust boundaries, attacked: directories and manifests others could have written, planted links,
FIFOs, paths that could forge output, and the same file given twice. Each attack must be refused
with a clear `error:` line (exit 1, no traceback) and nothing changed.

These run as root (as CI does); "another user" is a uid that owns nothing else, set with chown."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RUN, STORE_FILES, VERIFY, Stores, load_json, sha256

ROLLBACK = str(Path(RUN).with_name("rollback-rust-ownership-backfill.sh"))
OTHER = 4242
"""A uid that stands for an unprivileged user such as the service's."""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership attacks need root to chown (CI runs as root)")


def refused(done: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("{"))
    for phrase in phrases:
        assert phrase in errors, f"{phrase!r} not in:\n{errors}"
    return errors


def migrated(stores: Stores) -> Path:
    stores.write_samples()
    stores.call(RUN, check=0)
    return stores.newest_manifest()


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under `root`: its mode and its bytes (or a link's target)."""
    seen: dict[str, tuple[int, bytes | str]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                seen[path] = (st.st_mode, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                seen[path] = (st.st_mode, Path(path).read_bytes())
            else:
                seen[path] = (st.st_mode, "")
    return seen


# ------------------------------------------------------------------ the work directory


def test_the_work_directory_is_created_private(stores: Stores) -> None:
    manifest = migrated(stores)
    backups = stores.work / "backups" / manifest.stem
    for directory in (stores.work, stores.work / "manifests", stores.work / "backups", backups):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600


@pytest.mark.parametrize("part", ["", "manifests", "backups"])
@pytest.mark.parametrize("attack", ["world-writable", "group-writable", "other-owner", "symlink"])
def test_a_work_directory_others_could_write_is_refused(stores: Stores, tmp_path: Path, part: str, attack: str) -> None:
    stores.write_samples()
    directory = stores.work / part if part else stores.work
    if attack == "symlink":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        stores.work.mkdir(mode=0o700, exist_ok=True)
        directory.symlink_to(real) if part else (stores.work.rmdir(), directory.symlink_to(real))
    else:
        directory.mkdir(parents=True, mode=0o700)
        if attack == "world-writable":
            directory.chmod(0o777)
        elif attack == "group-writable":
            directory.chmod(0o770)
        else:
            os.chown(directory, OTHER, OTHER)
    pre = stores.hashes()
    before = snapshot(stores.work.parent)
    for command in ([RUN], ["store-migrate", "run", "--dry-run"]):
        done = stores.call(*command)
        fix = {"symlink": "is a symbolic link", "other-owner": f"chown {'root'} {directory}"}.get(
            attack, f"chmod go-w {directory}")
        refused(done, str(directory), fix)
    assert stores.hashes() == pre
    assert snapshot(stores.work.parent) == before


def test_a_manifest_planted_by_another_user_is_refused(stores: Stores) -> None:
    """The README's `ls manifests/*.json | sort | tail -n 1` picks a planted manifest: rollback and
    verify must refuse it."""
    manifest = migrated(stores)
    planted = manifest.with_name("20990101T000000Z.json")
    planted.write_bytes(manifest.read_bytes())
    os.chown(planted, OTHER, OTHER)
    current = stores.hashes()
    refused(stores.call(ROLLBACK, str(planted)), f"{planted} is owned by uid {OTHER}")
    refused(stores.call(VERIFY, str(planted)), f"{planted} is owned by uid {OTHER}")
    planted.chmod(0o622)
    os.chown(planted, 0, 0)
    refused(stores.call(ROLLBACK, str(planted)), f"{planted} is writable by group and others", "chmod go-w")
    refused(stores.call(VERIFY, str(planted)), f"{planted} is writable by group and others")
    assert stores.hashes() == current


def test_rollback_refuses_a_manifest_in_a_directory_others_can_write(stores: Stores, tmp_path: Path) -> None:
    manifest = migrated(stores)
    (stores.work / "manifests").chmod(0o1777)  # sticky, like /tmp: fine to read from, not to roll back from
    current = stores.hashes()
    refused(stores.call(ROLLBACK, str(manifest)), "manifests is writable by group and others")
    assert stores.hashes() == current
    (stores.work / "manifests").chmod(0o700)
    link = tmp_path / "link-to-manifest.json"
    link.symlink_to(manifest)
    refused(stores.call(ROLLBACK, str(link)), "is a symbolic link")
    stores.call(ROLLBACK, str(manifest), check=0)


# --------------------------------------------------------------------- edited manifests


def edit(manifest: Path, change: object) -> None:
    document = load_json(manifest)
    change(document)  # type: ignore[operator]
    manifest.write_text(json.dumps(document))


def test_a_backup_outside_the_runs_backup_directory_is_refused(stores: Stores, tmp_path: Path) -> None:
    manifest = migrated(stores)
    entry = load_json(manifest)["stores"][0]
    chosen = tmp_path / "chosen" / Path(entry["backup_path"]).name  # a name that looks like a backup
    chosen.parent.mkdir()
    chosen.write_bytes(b'{"attacker": true}')
    edit(manifest, lambda d: d["stores"][0].update(backup_path=str(chosen)))
    current = stores.hashes()
    refused(stores.call(ROLLBACK, str(manifest), "--force"), "is not in this manifest's own backup directory")
    refused(stores.call(VERIFY, str(manifest)), "is not in this manifest's own backup directory")
    assert stores.hashes() == current


def test_a_backup_that_is_a_link_to_a_secret_is_never_copied(stores: Stores, tmp_path: Path) -> None:
    manifest = migrated(stores)
    entry = load_json(manifest)["stores"][0]
    backup = Path(entry["backup_path"])
    secret = tmp_path / "root-only"
    secret.write_bytes(backup.read_bytes())  # same hash: only the link stands between it and a store
    secret.chmod(0o600)
    backup.unlink()
    backup.symlink_to(secret)
    stores.paths["auth"].unlink()
    refused(stores.call(ROLLBACK, str(manifest)), "[auth] backup unreadable")
    assert not stores.paths["auth"].exists()


@pytest.mark.parametrize(("field", "value", "phrase"), [
    ("path", "relative/store.json", "is not an absolute path"),
    ("path", "/tmp/../etc/passwd", "is not a normalised path"),
    ("path", "/tmp/store\nrollback completed using manifest: /x", "holds a control character"),
    ("path", "/tmp/store\u0000.json", "holds a control character"),
    ("backup_path", "/tmp/../x/auth-20260222T085502Z-000000000000.bak.json", "is not a normalised path"),
])
def test_manifest_paths_must_be_absolute_normalised_and_printable(
    stores: Stores, field: str, value: str, phrase: str
) -> None:
    manifest = migrated(stores)
    edit(manifest, lambda d: d["stores"][0].update({field: value}))
    current = stores.hashes()
    for command in (ROLLBACK, VERIFY):
        errors = refused(stores.call(command, str(manifest)), phrase)
        assert "rollback completed" not in errors
    assert stores.hashes() == current


def test_deleting_a_file_through_an_edited_manifest_needs_a_trusted_manifest(stores: Stores, tmp_path: Path) -> None:
    """`existed: false` with the victim's hash as after_sha256 would make rollback delete it: a
    manifest another user wrote is never read."""
    manifest = migrated(stores)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.chown(victim, OTHER, OTHER)

    def aim(document: dict[str, list[dict[str, object]]]) -> None:
        document["stores"][0].update(path=str(victim), existed=False, backup_path=None, before_sha256=None,
                                     after_sha256=sha256(victim), changed=True)

    edit(manifest, aim)
    os.chown(manifest, OTHER, OTHER)
    refused(stores.call(ROLLBACK, str(manifest)), "is owned by uid 4242")
    assert victim.read_text() == "precious"


# ------------------------------------------------------------------------- store links


def service_dir(stores: Stores) -> Path:
    """The store directory, owned by the unprivileged service user, stores included."""
    directory = stores.paths["auth"].parent
    os.chown(directory, OTHER, OTHER)
    return directory


def test_a_link_the_service_user_controls_may_not_lead_to_roots_files(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    directory = service_dir(stores)
    for path in stores.paths.values():
        os.chown(path, OTHER, OTHER)
    secret = tmp_path / "root-only.json"
    secret.write_text('{"users_by_id": {}}')
    secret.chmod(0o600)
    stores.paths["auth"].unlink()
    stores.paths["auth"].symlink_to(secret)
    os.lchown(stores.paths["auth"], OTHER, OTHER)
    before = secret.read_bytes()
    for command in ([RUN], ["store-migrate", "run", "--dry-run"]):
        refused(stores.call(*command), f"refusing to follow the symbolic link {stores.paths['auth']}",
                "owned by root")
    assert secret.read_bytes() == before
    assert stores.manifests() == []
    assert directory.exists()


def test_a_link_root_made_may_lead_into_the_service_users_directory(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    service = tmp_path / "service-home"
    service.mkdir()
    os.chown(service, OTHER, OTHER)
    real = service / "auth.json"
    real.write_bytes(stores.paths["auth"].read_bytes())
    os.chown(real, OTHER, OTHER)
    stores.paths["auth"].unlink()
    stores.paths["auth"].symlink_to(real)
    stores.call(RUN, check=0)
    entry = load_json(stores.newest_manifest())["stores"][0]
    assert entry["path"] == str(stores.paths["auth"]) and entry["resolved_path"] == str(real)
    assert stores.paths["auth"].is_symlink() and real.stat().st_uid == OTHER
    stores.call(VERIFY, str(stores.newest_manifest()), check=0)


def test_rollback_never_follows_a_link_planted_after_the_run(stores: Stores, tmp_path: Path) -> None:
    manifest = migrated(stores)
    service_dir(stores)
    target = tmp_path / "etc-cron-d-evil"
    stores.paths["auth"].unlink()
    stores.paths["auth"].symlink_to(target)  # dangling: "missing file, restored without --force"
    os.lchown(stores.paths["auth"], OTHER, OTHER)
    for force in ([], ["--force"]):
        refused(stores.call(ROLLBACK, str(manifest), *force), str(stores.paths["auth"]))
        assert not target.exists()
    refused(stores.call(VERIFY, str(manifest)), "[auth]")


def test_a_store_link_retargeted_after_the_run_is_refused(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    real, other = tmp_path / "real.json", tmp_path / "other.json"
    real.write_bytes(stores.paths["domain"].read_bytes())
    stores.paths["domain"].unlink()
    stores.paths["domain"].symlink_to(real)
    stores.call(RUN, check=0)
    manifest = stores.newest_manifest()
    other.write_bytes(real.read_bytes())
    stores.paths["domain"].unlink()
    stores.paths["domain"].symlink_to(other)
    refused(stores.call(VERIFY, str(manifest)), f"now leads to {other}, not to {real}")
    for force in ([], ["--force"]):
        refused(stores.call(ROLLBACK, str(manifest), *force), f"now leads to {other}")
    assert other.read_bytes() == real.read_bytes()
    stores.paths["domain"].unlink()
    stores.paths["domain"].symlink_to(real)
    stores.call(ROLLBACK, str(manifest), check=0)


def test_a_report_is_never_written_through_a_link(stores: Stores, tmp_path: Path) -> None:
    manifest = migrated(stores)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    report = tmp_path / "report.md"
    report.symlink_to(victim)
    refused(stores.call(VERIFY, str(manifest), "--report", str(report)), "is a symbolic link")
    assert victim.read_text() == "keep me" and report.is_symlink()


# ---------------------------------------------------------------------- up-front checks


def test_the_same_file_for_two_stores_is_refused_up_front(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    pre = stores.hashes()
    same = {"DOMAIN_STORE_PATH": str(stores.paths["auth"])}
    refused(stores.call(RUN, env=same), "are the same file")
    linked = tmp_path / "linked-storage"
    linked.symlink_to(stores.paths["auth"].parent)
    through_link = {"DOMAIN_STORE_PATH": str(linked / STORE_FILES["auth"])}
    refused(stores.call(RUN, env=through_link), "are the same file")
    hard = tmp_path / "hard.json"
    os.link(stores.paths["auth"], hard)
    refused(stores.call(RUN, env={"DOMAIN_STORE_PATH": str(hard)}), "are the same file")
    assert stores.hashes() == pre and not stores.work.exists()


@pytest.mark.parametrize("command", ["run", "dry-run", "check", "verify", "rollback"])
def test_a_fifo_store_is_refused_without_blocking(stores: Stores, command: str) -> None:
    manifest = migrated(stores) if command in ("verify", "rollback") else None
    stores.write_samples() if manifest is None else None
    stores.paths["codex_threads"].unlink()
    os.mkfifo(stores.paths["codex_threads"])
    args = {
        "run": [RUN], "dry-run": ["store-migrate", "run", "--dry-run"],
        "check": ["store-migrate", "check", "--kind", "codex_threads", str(stores.paths["codex_threads"])],
        "verify": [VERIFY, str(manifest)], "rollback": [ROLLBACK, str(manifest), "--force"],
    }[command]
    errors = refused(stores.call(*args))  # Stores.call times out (and fails) if it blocks
    assert "FIFO" in errors or "not a regular file" in errors


@pytest.mark.parametrize("command", ["run", "dry-run"])
def test_a_sparse_store_is_refused_before_it_is_copied_or_read(stores: Stores, command: str) -> None:
    """`truncate -s 64G` makes a store in an instant that would take minutes to copy and parse
    (and fill the work directory's disk): its hole is found in one call."""
    stores.write_samples()
    with open(stores.paths["codex_threads"], "r+b") as store:
        store.truncate(64 << 30)
    pre = stores.paths["auth"].read_bytes()
    started = time.monotonic()
    refused(stores.call(*{"run": [RUN], "dry-run": ["store-migrate", "run", "--dry-run"]}[command]),
            f"refusing to migrate {stores.paths['codex_threads']}: the file has holes")
    assert time.monotonic() - started < 30
    assert stores.paths["auth"].read_bytes() == pre
    assert stores.manifests() == [] and not (stores.work / "backups").exists() or not any(
        (stores.work / "backups").iterdir())
    assert [p.name for p in stores.paths["auth"].parent.iterdir() if ".store-migrate-tmp-" in p.name] == []


def test_check_names_a_sparse_file_without_reading_it(stores: Stores) -> None:
    """`check` read a file whole into memory: a 64 GB sparse one could not be read back at all."""
    sparse = stores.paths["codex_threads"]
    with open(sparse, "wb") as store:
        store.truncate(64 << 30)
    started = time.monotonic()
    done = stores.call("store-migrate", "check", "--kind", "codex_threads", str(sparse))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"not readable: {sparse} (codex_threads): the file has holes" in done.stdout
    assert time.monotonic() - started < 30


def test_a_store_inside_the_work_directory_is_refused(stores: Stores) -> None:
    manifest = migrated(stores)
    inside = stores.work / "manifests" / "29990101T000000Z.json"
    refused(stores.call(RUN, env={"DOMAIN_STORE_PATH": str(inside)}), "lies inside the work directory")
    assert stores.newest_manifest() == manifest and not inside.exists()


@pytest.mark.parametrize("name", [b"store\nrollback completed using manifest: x.json", b"store-\xff.json"])
def test_store_paths_that_cannot_be_printed_are_refused(stores: Stores, name: bytes) -> None:
    stores.write_samples()
    path = os.fsencode(stores.paths["auth"].parent) + b"/" + name
    with open(path, "wb") as handle:
        handle.write(b"{}")
    environ = {**stores.environ, "AUTH_STORE_PATH": os.fsdecode(path)}
    done = subprocess.run([RUN], env={k: os.fsencode(v) for k, v in environ.items()},  # type: ignore[misc]
                          capture_output=True, check=False, timeout=60)
    text = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
    errors = refused(text, "holds a control character or bytes that are not UTF-8")
    assert "rollback completed" not in text.stdout and "\nrollback completed" not in errors
    assert not stores.work.exists()


def test_a_work_directory_that_cannot_be_printed_is_refused(stores: Stores) -> None:
    stores.write_samples()
    work = str(stores.root / "work\nrust-store-migrate: wrote manifest to /x")
    done = stores.call(RUN, env={"WORK_DIR": work})
    refused(done, "work directory (WORK_DIR)", "holds a control character")
    assert "wrote manifest" not in done.stdout and not os.path.exists(work)


def test_deep_nesting_in_a_store_or_a_manifest_is_a_clear_error(stores: Stores, tmp_path: Path) -> None:
    stores.write_samples()
    deep = b'{"threads": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    stores.write("codex_threads", deep)
    refused(stores.call(RUN), "nesting too deep")
    assert stores.manifests() == []
    stores.write_samples()
    manifest = migrated(stores)
    manifest.write_bytes(b"[" * 5000 + b"]" * 5000)
    refused(stores.call(VERIFY, str(manifest)), "nesting too deep")
