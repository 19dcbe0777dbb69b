"""manifest.py on its own: the manifest written and read back, what `load` refuses, who may have
written one, and `each_in` over a work directory's manifests/."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

# One line per module: the modules are moving into packages, and a script rewrites these lines.
# isort: off
from store_migrate import errors
from store_migrate.core import manifest
from store_migrate.fs import ondisk
from store_migrate.core import workdir
# isort: on

STAMP = "20260222T085502Z"
SPARE_UID, SPARE_GID = 4242, 4243


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def work_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "manifests").mkdir(parents=True, exist_ok=True)
    (work / "backups").mkdir(exist_ok=True)
    return work


def backup_for(work: Path, kind: str, stamp: str = STAMP) -> str:
    return str(work / "backups" / stamp / workdir.backup_name(kind, stamp, sha(f"before {kind}")))


def document(work: Path, stamp: str = STAMP) -> dict[str, Any]:
    """A manifest as a run of this tool writes it: auth and codex_threads existed, domain was created."""
    stores: list[dict[str, Any]] = []
    for kind in ("auth", "codex_threads"):
        stores.append({
            "store": kind, "path": f"/srv/storage/{kind}.json", "existed": True,
            "backup_path": backup_for(work, kind, stamp), "before_sha256": sha(f"before {kind}"),
            "after_sha256": sha(f"after {kind}"), "changed": True, "counts": {"users": 3},
            "validation_problems": 0, "resolved_path": f"/srv/storage/{kind}.json",
            "after_identity": {"device": 1, "inode": 2, "size": 3, "mtime_ns": 4, "ctime_ns": 5},
        })
    stores.append({
        "store": "domain", "path": "/srv/storage/domain.json", "existed": False, "backup_path": None,
        "before_sha256": None, "after_sha256": sha("after domain"), "changed": True, "counts": {},
        "validation_problems": 0,
    })
    return {
        "schema": manifest.SCHEMA_ID, "generated_at": "2026-02-22T08:55:02Z", "status": manifest.COMPLETE,
        "tool_version": "0.1.0", "transform_version": 2, "backup_dir": str(work / "backups" / stamp),
        "stores": stores,
    }


def write(work: Path, content: dict[str, Any] | bytes, stamp: str = STAMP) -> Path:
    path = work / "manifests" / f"{stamp}.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content, indent=2).encode())
    return path


def test_a_manifest_with_every_field_reads_back_equal(tmp_path: Path) -> None:
    """Catches: a field that to_bytes drops or load does not read back (after_identity, resolved_path...)."""
    work = work_dir(tmp_path)
    record = manifest.Manifest(
        generated_at="2026-02-22T08:55:02Z",
        stores=[
            manifest.StoreEntry(
                store="auth", path="/srv/stores/é auth.json", existed=True, backup_path=backup_for(work, "auth"),
                before_sha256=sha("before auth"), after_sha256=sha("after auth"), changed=True,
                counts={"users": 2, "sessions": 0}, validation_problems=1,
                after_identity={"device": 64769, "inode": 12, "size": 99, "mtime_ns": 1, "ctime_ns": 2},
                resolved_path="/data/stores/é auth.json",
            ),
            manifest.StoreEntry(
                store="codex_threads", path="/srv/stores/codex.json", existed=True,
                backup_path=backup_for(work, "codex_threads"), before_sha256=sha("before codex_threads"),
                after_sha256=sha("before codex_threads"), changed=False, counts={"threads": 0},
                validation_problems=0,
            ),
            manifest.StoreEntry(
                store="domain", path="/srv/stores/domain.json", existed=False, backup_path=None,
                before_sha256=None, after_sha256=sha("after domain"), changed=True, counts={},
            ),
        ],
        status=manifest.PENDING, tool_version="0.1.0", transform_version=2,
        backup_dir=str(work / "backups" / STAMP),
    )
    path = write(work, record.to_bytes())
    loaded = manifest.load(str(path))
    assert loaded == record
    assert json.loads(record.to_bytes())["schema"] == "openagents.rust_store_migration.v1"
    assert record.to_bytes().endswith(b"}\n")


def test_a_manifest_with_the_v1_fields_only_is_written_without_the_others(tmp_path: Path) -> None:
    """Catches: `null` written for fields a manifest does not have (the schema refuses a null status)."""
    work = work_dir(tmp_path)
    record = manifest.Manifest("2026-02-22T08:55:02Z", [manifest.StoreEntry(
        "domain", "/srv/domain.json", False, None, None, sha("after"), True, {"shouts": 1})])
    written = json.loads(record.to_bytes())
    assert list(written) == ["schema", "generated_at", "stores"]
    assert list(written["stores"][0]) == ["store", "path", "existed", "backup_path", "before_sha256",
                                          "after_sha256", "changed", "counts"]
    loaded = manifest.load(str(write(work, record.to_bytes())))
    assert loaded == record
    assert loaded.status is None and loaded.complete


EARLIER = """{
  "schema": "openagents.rust_store_migration.v1",
  "generated_at": "2026-02-22T08:55:02Z",
  "stores": [
    {
      "store": "domain",
      "path": "storage/rust-domain-store.json",
      "existed": true,
      "backup_path": "work/backups/20260222T085502Z/domain-20260222T085502Z-BEFORE12.bak.json",
      "before_sha256": "BEFORE",
      "after_sha256": "AFTER",
      "changed": true,
      "counts": {"autopilots": 0, "l402_paywalls": 0, "integrations": 0, "shouts": 1, "whispers": 0}
    },
    {
      "store": "auth",
      "path": "storage/rust-auth-store.json",
      "existed": false,
      "backup_path": null,
      "before_sha256": null,
      "after_sha256": "AFTER",
      "changed": true,
      "counts": {"users": 0, "sessions": 0, "personal_access_tokens": 0}
    }
  ]
}
"""


def test_a_manifest_of_the_earlier_implementation_loads_with_paths_from_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches: refusing the earlier format (no status, relative paths), or resolving its paths elsewhere."""
    work = work_dir(tmp_path)
    before, after = sha("before"), sha("after")
    text = EARLIER.replace("BEFORE12", before[:12]).replace("BEFORE", before).replace("AFTER", after)
    write(work, text.encode())
    monkeypatch.chdir(tmp_path)
    loaded = manifest.load(f"work/manifests/{STAMP}.json", changes=True)
    assert loaded.status is None and loaded.complete
    assert loaded.tool_version is None and loaded.transform_version is None and loaded.backup_dir is None
    assert [e.store for e in loaded.stores] == ["auth", "domain"]  # manifest order, whatever the file's
    domain = loaded.stores[1]
    assert domain.path == str(tmp_path / "storage" / "rust-domain-store.json")
    assert domain.backup_path == str(work / "backups" / STAMP / f"domain-{STAMP}-{before[:12]}.bak.json")
    assert domain.validation_problems is None and domain.after_identity is None and domain.resolved_path is None


Mutation = Callable[[dict[str, Any]], None]


def _set(entry: int, key: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        d["stores"][entry][key] = value

    return mutate


def _drop(entry: int, key: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        del d["stores"][entry][key]

    return mutate


REFUSALS: list[tuple[str, Mutation, str]] = [
    ("schema tag", lambda d: d.update(schema="openagents.rust_store_migration.v2"), "$.schema"),
    ("no schema tag", lambda d: d.pop("schema"), "'schema' is a required property"),
    ("no stores", lambda d: d.pop("stores"), "'stores' is a required property"),
    ("no entries", lambda d: d.update(stores=[]), "$.stores"),
    ("unknown status", lambda d: d.update(status="done"), "$.status"),
    ("time", lambda d: d.update(generated_at="yesterday"), "generated_at is not an RFC 3339 time"),
    ("missing field", _drop(0, "after_sha256"), "$.stores[0]: 'after_sha256' is a required property"),
    ("unknown kind", _set(0, "store", "billing"), "$.stores[0].store"),
    ("short hash", _set(0, "after_sha256", "abc"), "$.stores[0].after_sha256"),
    ("negative count", _set(0, "counts", {"users": -1}), "$.stores[0].counts.users"),
    ("existed without backup", _set(0, "backup_path", None), "$.stores[0].backup_path"),
    ("relative path", _set(0, "path", "srv/auth.json"), "[auth] path srv/auth.json is not an absolute path"),
    ("dot-dot", _set(0, "path", "/srv/../etc/auth.json"), "[auth] path /srv/../etc/auth.json is not a normalised path"),
    ("double slash", _set(0, "path", "/srv//auth.json"), "is not a normalised path"),
    ("dot", _set(0, "path", "/srv/./auth.json"), "is not a normalised path"),
    ("trailing slash", _set(0, "path", "/srv/auth.json/"), "is not a normalised path"),
    ("newline", _set(0, "path", "/srv/auth.json\nerror: forged"), "[auth] path holds a control character"),
    ("escape", _set(0, "path", "/srv/\x1b[2Jauth.json"), "[auth] path holds a control character"),
    ("relative resolved_path", _set(0, "resolved_path", "srv/auth.json"), "resolved_path srv/auth.json is not an absolute path"),
    ("control in resolved_path", _set(0, "resolved_path", "/srv/\rauth.json"), "[auth] resolved_path holds a control character"),
    ("backup of another hash", _set(0, "before_sha256", sha("other")), "is not the backup of this store"),
    ("backup of another store", _set(1, "backup_path", "BACKUP_OF_AUTH"), "[codex_threads] backup_path"),
    ("backup in another run's directory", _set(0, "backup_path", "OTHER_RUN"), "is not in this manifest's own backup directory"),
    ("backup named for another run", _set(0, "backup_path", "OTHER_NAME"), "under the name the run gives it"),
    ("backup elsewhere", _set(0, "backup_path", "ELSEWHERE"), "is not in this manifest's own backup directory"),
    ("listed twice", lambda d: d["stores"].__setitem__(2, copy.deepcopy(d["stores"][1])), "a store is listed twice"),
    ("changed but equal hashes", _set(0, "after_sha256", sha("before auth")), "changed is true but the before and after hashes are equal"),
    ("unchanged but different hashes", _set(0, "changed", False), "changed is false but the before and after hashes differ"),
]


@pytest.mark.parametrize(("mutate", "reason"), [(m, r) for _, m, r in REFUSALS], ids=[i for i, _, _ in REFUSALS])
def test_load_refuses_a_manifest_that_is_not_what_a_run_writes(tmp_path: Path, mutate: Mutation, reason: str) -> None:
    """Catches: a manifest check that lets a hand-edited or forged manifest steer verify or rollback."""
    work = work_dir(tmp_path)
    d = document(work)
    mutate(d)
    for entry in d.get("stores", []):  # placeholders for paths that depend on the work directory
        entry["backup_path"] = {
            "BACKUP_OF_AUTH": backup_for(work, "auth"),
            "OTHER_RUN": str(work / "backups" / "20260101T000000Z" / workdir.backup_name("auth", STAMP, sha("before auth"))),
            "OTHER_NAME": str(work / "backups" / STAMP / workdir.backup_name("auth", "20260101T000000Z", sha("before auth"))),
            "ELSEWHERE": str(tmp_path / workdir.backup_name("auth", STAMP, sha("before auth"))),
        }.get(entry.get("backup_path") or "", entry.get("backup_path"))
    path = write(work, d)
    with pytest.raises(errors.ManifestInvalid) as raised:
        manifest.load(str(path))
    assert raised.value.message.startswith(f"manifest {path} is not usable: ")
    assert reason in raised.value.message, raised.value.message
    assert "\n" not in raised.value.message and "\x1b" not in raised.value.message and "\r" not in raised.value.message


def test_a_backup_elsewhere_is_accepted_when_the_backups_are_not_used(tmp_path: Path) -> None:
    """Catches: `in_place=False` (a baseline read for its counts only) refusing a manifest moved out of its work dir."""
    work = work_dir(tmp_path)
    d = document(work, stamp="20260101T000000Z")  # backups of another run's directory, under another name
    path = write(work, d)
    with pytest.raises(errors.ManifestInvalid, match="own backup directory"):
        manifest.load(str(path))
    assert [e.store for e in manifest.load(str(path), in_place=False).stores] == ["auth", "codex_threads", "domain"]


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "not valid JSON"),
    (b'{"schema": ', "not valid JSON: unexpected end of file"),
    (b"\xef\xbb\xbf{}", "not valid JSON"),
    (b"[]", "it does not match the manifest schema"),
    (b'{"schema": "openagents.rust_store_migration.v1", "generated_at": "2026-02-22T08:55:02Z", "stores": [1]}',
     "$.stores[0]"),
])
def test_load_refuses_bytes_that_are_not_a_manifest(tmp_path: Path, content: bytes, reason: str) -> None:
    """Catches: a parse error escaping as a traceback (or a non-object read as a manifest)."""
    path = write(work_dir(tmp_path), content)
    with pytest.raises(errors.ManifestInvalid) as raised:
        manifest.load(str(path))
    assert reason in raised.value.message, raised.value.message


def test_load_refuses_what_is_not_a_manifest_file(tmp_path: Path) -> None:
    """Catches: a missing manifest surfacing as a bare OSError, or an unprintable path printed as it is."""
    work = work_dir(tmp_path)
    with pytest.raises(errors.ManifestNotFound):
        manifest.load(str(work / "manifests" / f"{STAMP}.json"))
    with pytest.raises(ondisk.UnsafeStorePath, match="manifest path"):
        manifest.load(str(work / "manifests" / "a\nb.json"))


def test_load_refuses_a_directory_named_like_a_manifest(tmp_path: Path) -> None:
    """Catches: a directory in a manifest's place surfacing as a bare OSError instead of an operator's message."""
    work = work_dir(tmp_path)
    (work / "manifests" / f"{STAMP}.json").mkdir()
    with pytest.raises(errors.ManifestInvalid, match="it is not a regular file"):
        manifest.load(str(work / "manifests" / f"{STAMP}.json"))


def test_each_in_passes_over_a_directory_named_like_a_manifest(tmp_path: Path) -> None:
    """Catches: one odd entry in manifests/ stopping every later run, prune and rollback check that lists them."""
    work = work_dir(tmp_path)
    write(work, document(work, "20260101T000000Z"), "20260101T000000Z")
    (work / "manifests" / "20260107T000000Z.json").mkdir()
    listed = [os.path.basename(p) for p, _ in manifest.each_in(str(work / "manifests"))]
    assert listed == ["20260101T000000Z.json"]


def test_a_linked_manifest_is_refused_only_to_a_command_that_changes_stores(tmp_path: Path) -> None:
    """Catches: rollback following a link to a manifest it did not check (or verify refusing a harmless link)."""
    work = work_dir(tmp_path)
    real = tmp_path / "kept-elsewhere.json"
    real.write_text(json.dumps(document(work)))
    link = work / "manifests" / f"{STAMP}.json"
    link.symlink_to(real)
    assert manifest.load(str(link)).complete
    with pytest.raises(errors.ManifestInvalid, match="it is a symbolic link"):
        manifest.load(str(link), changes=True)


@pytest.mark.parametrize("changes", [False, True])
@pytest.mark.parametrize(("owner", "mode", "reason"), [
    ((SPARE_UID, 0), 0o600, "is owned by uid 4242, not by root"),
    ((0, SPARE_GID), 0o620, "is writable by its group (mode 0620)"),
    ((0, 0), 0o602, "is writable by others (mode 0602)"),
    ((0, 0), 0o666, "is writable by group and others (mode 0666)"),
])
def test_a_manifest_someone_else_could_have_written_is_refused(
    tmp_path: Path, changes: bool, owner: tuple[int, int], mode: int, reason: str
) -> None:
    """Catches: trusting a manifest another user could have edited to steer a rollback run as root."""
    work = work_dir(tmp_path)
    path = write(work, document(work))
    os.chown(path, *owner)
    os.chmod(path, mode)
    with pytest.raises(workdir.UntrustedPath) as raised:
        manifest.load(str(path), changes=changes)
    assert reason in raised.value.message, raised.value.message


@pytest.mark.parametrize(("owner", "mode", "reason"), [
    ((SPARE_UID, 0), 0o700, "manifest directory"),
    ((SPARE_UID, 0), 0o700, "is owned by uid 4242"),
    ((0, SPARE_GID), 0o770, "is writable by its group"),
    ((0, 0), 0o1777, "is writable by group and others"),
])
def test_the_manifest_directory_must_be_trusted_by_a_command_that_changes_stores(
    tmp_path: Path, owner: tuple[int, int], mode: int, reason: str
) -> None:
    """Catches: rollback using a manifest in a directory where another user could have swapped it."""
    work = work_dir(tmp_path)
    path = write(work, document(work))
    os.chown(work / "manifests", *owner)
    os.chmod(work / "manifests", mode)
    assert manifest.load(str(path)).complete  # verify changes nothing: the file's own trust is enough
    with pytest.raises(workdir.UntrustedPath) as raised:
        manifest.load(str(path), changes=True)
    assert reason in raised.value.message, raised.value.message


def test_each_in_lists_readable_manifests_in_time_order_and_passes_over_the_rest(tmp_path: Path) -> None:
    """Catches: an order that is not by time, a stray file taken for a manifest, or one bad manifest
    stopping the listing."""
    work = work_dir(tmp_path)
    manifests = work / "manifests"
    good = ["20260101T000000Z", "20260103T000000Z", "20260105T000000Z"]
    for stamp, status in zip(good, [manifest.COMPLETE, manifest.PENDING, manifest.REVERTED], strict=True):
        write(work, {**document(work, stamp), "status": status}, stamp)
    write(work, b"{not json", "20260102T000000Z")
    foreign = write(work, document(work, "20260104T000000Z"), "20260104T000000Z")
    os.chown(foreign, SPARE_UID, SPARE_GID)
    (manifests / "notes.json").write_text(json.dumps(document(work)))
    (manifests / "20260106T000000Z.json.bak").write_text(json.dumps(document(work, "20260106T000000Z")))
    (manifests / f".{STAMP}.json.store-migrate-tmp-1-0000abcd").write_text(json.dumps(document(work)))
    with capture_logs() as logs:
        listed = list(manifest.each_in(str(manifests)))
    assert [os.path.basename(p) for p, _ in listed] == [f"{s}.json" for s in good]
    assert [m.status for _, m in listed] == [manifest.COMPLETE, manifest.PENDING, manifest.REVERTED]
    skipped = sorted(os.path.basename(e["path"]) for e in logs if e["event"] == "manifest.skipped")
    assert skipped == ["20260102T000000Z.json", "20260104T000000Z.json"]
    newest_first = [os.path.basename(p) for p, _ in manifest.each_in(str(manifests), newest_first=True)]
    assert newest_first == [f"{s}.json" for s in reversed(good)]


def test_each_in_a_missing_directory_lists_nothing(tmp_path: Path) -> None:
    """Catches: a first run (no manifests/ yet) failing on listing its predecessors."""
    assert list(manifest.each_in(str(tmp_path / "nowhere"))) == []


@pytest.mark.parametrize(("status", "complete"), [
    (None, True), (manifest.COMPLETE, True), (manifest.PENDING, False), (manifest.REVERTED, False),
])
def test_only_a_complete_manifest_or_one_of_the_earlier_implementation_is_complete(
    tmp_path: Path, status: str | None, complete: bool
) -> None:
    """Catches: a pending or reverted run's manifest taken as proof that stores are migrated."""
    work = work_dir(tmp_path)
    d = document(work)
    if status is None:
        for key in ("status", "tool_version", "transform_version", "backup_dir"):
            del d[key]
    else:
        d["status"] = status
    loaded = manifest.load(str(write(work, d)))
    assert loaded.status == status
    assert loaded.complete is complete
    assert (manifest.PENDING, manifest.COMPLETE, manifest.REVERTED) == ("pending", "complete", "reverted")
