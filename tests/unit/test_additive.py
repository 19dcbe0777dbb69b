"""verify --additive: the migration lost and changed nothing, member by member.

Through the CLI on runs of this tool and on migrations of the earlier implementation (which
turned integers beyond 64 bits into floats, could move a float's last digit and replaced what it
could not parse with empty values); through the library on the golden cases; and with
hypothesis: a migration by this tool is always additive, any change to what a backup held is
always found, and the shortcut (canonical bytes) never says yes where the walk says no.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import EXAMPLES, GOLDEN, RUN, VERIFY, Stores, load_json, log_events
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_properties import store_values
from test_safety import big_stores, copy_big  # noqa: F401 (big_stores is a fixture)

from store_migrate.commands import additive
from store_migrate.core import transform
from store_migrate.core.manifest import StoreEntry
from store_migrate.core.stores import store_kind
from store_migrate.readable import jsonio, typed

M = "SECRET-MARKER-5d1c"
STAMP = "20260222T085502Z"


@pytest.fixture
def migrated(stores: Stores) -> Path:
    stores.write_samples()
    stores.call(RUN, check=0)
    return stores.newest_manifest()


def earlier_run(stores: Stores, befores: dict[str, bytes], afters: dict[str, bytes]) -> Path:
    """What the earlier implementation left: backups, a v1 manifest and the live stores it wrote."""
    backups = stores.work / "backups" / STAMP
    backups.mkdir(parents=True)
    (stores.work / "manifests").mkdir()
    entries = []
    for kind in ("auth", "codex_threads", "domain"):
        before, after = befores.get(kind), afters[kind]
        stores.paths[kind].write_bytes(after)
        counts = transform.counts(store_kind(kind), jsonio.decode(after))
        entry: dict[str, Any] = {"store": kind, "path": str(stores.paths[kind]), "existed": before is not None,
                                 "backup_path": None, "before_sha256": None,
                                 "after_sha256": hashlib.sha256(after).hexdigest(), "changed": True, "counts": counts}
        if before is not None:
            digest = hashlib.sha256(before).hexdigest()
            backup = backups / f"{kind}-{STAMP}-{digest[:12]}.bak.json"
            backup.write_bytes(before)
            entry.update(backup_path=str(backup), before_sha256=digest, changed=digest != entry["after_sha256"])
        entries.append(entry)
    manifest = stores.work / "manifests" / f"{STAMP}.json"
    manifest.write_text(json.dumps({"schema": "openagents.rust_store_migration.v1", "generated_at": "2026-02-22T08:55:02Z",
                                    "stores": entries}, indent=2))
    return manifest


def migrate(kind: str, value: Any) -> bytes:
    """This tool's output for a store value (the earlier implementation's too, where it lost nothing)."""
    return jsonio.encode(transform.backfill(store_kind(kind), copy.deepcopy(value)).value)


def _clean_earlier(stores: Stores) -> tuple[dict[str, bytes], dict[str, bytes]]:
    befores = {kind: (stores.root / "samples" / kind).read_bytes() for kind in ("auth", "codex_threads", "domain")}
    return befores, {kind: migrate(kind, jsonio.decode(data)) for kind, data in befores.items()}


@pytest.fixture
def samples(stores: Stores) -> None:
    stores.write_samples()
    (stores.root / "samples").mkdir()
    for kind, path in stores.paths.items():
        (stores.root / "samples" / kind).write_bytes(path.read_bytes())


def test_a_run_of_this_tool_is_additive(stores: Stores, migrated: Path) -> None:
    done = stores.call(VERIFY, str(migrated), "--additive", check=0)
    assert done.stdout.splitlines() == [
        f"ok: [auth] {stores.paths['auth']}",
        f"ok: [codex_threads] {stores.paths['codex_threads']}",
        f"ok: [domain] {stores.paths['domain']}",
        "additive: [auth] nothing lost or changed (canonical)",
        "additive: [codex_threads] nothing lost or changed (canonical)",
        "additive: [domain] nothing lost or changed (canonical)",
        f"rust store backfill verification passed: {migrated}",
    ]
    events = [e for e in log_events(done.stderr) if e["event"] == "store.additive"]
    assert [(e["store"], e["additive"], e["method"], e["differences"]) for e in events] == [
        ("auth", True, "canonical", 0), ("codex_threads", True, "canonical", 0), ("domain", True, "canonical", 0)]
    # without the option nothing is proven or printed; VERIFY_ADDITIVE=1 turns it on for the wrapper
    assert "additive" not in stores.call(VERIFY, str(migrated), check=0).stdout
    assert "additive: [auth]" in stores.call(VERIFY, str(migrated), env={"VERIFY_ADDITIVE": "1"}, check=0).stdout


def test_big_stores_are_proven_in_worker_processes(stores: Stores, big_stores: Path) -> None:  # noqa: F811
    """Stores of tens of megabytes: proofs run in forked workers on mapped pages (workers.py)."""
    copy_big(big_stores, stores)
    stores.call(RUN, check=0)
    manifest = str(stores.newest_manifest())
    done = stores.call(VERIFY, manifest, "--additive", check=0)
    assert done.stdout.count("nothing lost or changed (canonical)") == 3
    live = jsonio.decode(stores.paths["codex_threads"].read_bytes())
    thread = sorted(live["threads"])[5]
    live["threads"][thread]["message_count"] += 1
    stores.paths["codex_threads"].write_bytes(jsonio.encode(live))
    done = stores.call(VERIFY, manifest, "--additive", check=1)
    assert "  $.threads[#5].message_count: holds another integer" in done.stderr.splitlines()
    assert "additive: [auth] nothing lost or changed (canonical)" in done.stdout.splitlines()


def test_a_store_already_in_the_current_shape_is_additive_byte_for_byte(stores: Stores) -> None:
    stores.write_samples()
    for kind, path in stores.paths.items():  # the run keeps these bytes: the backup is the live store
        path.write_bytes(migrate(kind, jsonio.decode(path.read_bytes())))
    stores.call(RUN, check=0)
    done = stores.call(VERIFY, str(stores.newest_manifest()), "--additive", check=0)
    assert "additive: [domain] nothing lost or changed (unchanged)" in done.stdout.splitlines()


def test_a_store_created_by_the_run_has_nothing_to_lose(stores: Stores) -> None:
    stores.write_samples()
    stores.paths["codex_threads"].unlink()
    stores.call(RUN, check=0)
    done = stores.call(VERIFY, str(stores.newest_manifest()), "--additive", check=0)
    assert "additive: [codex_threads] nothing lost or changed (new store)" in done.stdout.splitlines()


def test_an_earlier_implementation_that_lost_nothing_passes(stores: Stores, samples: None) -> None:
    manifest = earlier_run(stores, *_clean_earlier(stores))
    done = stores.call(VERIFY, str(manifest), "--additive", check=0)
    assert done.stdout.count("nothing lost or changed (canonical)") == 3


def test_what_the_earlier_implementation_lost_is_found_by_path_never_by_value(stores: Stores) -> None:
    """Beyond 64 bits an integer became a float, a float's last digit moved, `1` became `1.0`,
    a record lost a field: each named by its pointer; keys and values are markers never printed."""
    big = 2**64 + 1
    metadata = {f"{M}-region": f"{M}-eu", f"{M}-big": big, f"{M}-pi": 3.141592653589793, f"{M}-one": 1}
    domain = {
        "user_integrations": {f"{M}-user::resend": {"id": 7, "user_id": M, "provider": "resend", "status": "connected",
                                                     "metadata": metadata, "created_at": "2026-03-04T05:06:07Z",
                                                     "updated_at": "2026-03-04T05:06:07Z"}},
        "shouts": [{"id": 3, "body": M, "zone": None}, {"id": 41, "body": M, "zone": "eu"}],
        "next_shout_id": 5,
    }
    lossy = copy.deepcopy(domain)
    lossy["user_integrations"][f"{M}-user::resend"]["metadata"].update({
        f"{M}-big": float(big), f"{M}-pi": 3.1415926535897927, f"{M}-one": 1.0})
    del lossy["shouts"][1]["zone"]
    auth = {"sessions": {f"{M}-session": {"session_id": M, "status": "active"}}, "users_by_email": {M: M}}
    lossy_auth = {"sessions": {f"{M}-session": {"session_id": M, "status": "active"}}, "users_by_email": {}}
    manifest = earlier_run(
        stores,
        {"auth": json.dumps(auth).encode(), "codex_threads": b'{"threads": {}, "messages_by_thread": {"t": [1e400',
         "domain": json.dumps(domain).encode()},
        {"auth": migrate("auth", lossy_auth), "codex_threads": migrate("codex_threads", {}),
         "domain": migrate("domain", lossy)},
    )
    done = stores.call(VERIFY, str(manifest), "--additive", check=1)
    errors = done.stderr.splitlines()
    at = errors.index("error: [domain] not additive: 4 difference(s) from the backup; first:")
    assert errors[at + 1:at + 5] == [  # in the backup's order; members by their place among sorted keys
        "  $.user_integrations[#0].metadata[#0]: was an integer, now a number with a fraction or exponent",
        "  $.user_integrations[#0].metadata[#2]: holds another number (a different double, or the sign of a zero)",
        "  $.user_integrations[#0].metadata[#1]: was an integer, now a number with a fraction or exponent",
        "  $.shouts[1].zone: is missing in the live store (the backup holds a string there)",
    ]
    assert "error: [auth] not additive: 1 difference(s) from the backup; first:" in errors
    assert "  $.users_by_email[#0]: is missing in the live store (the backup holds a string there)" in errors
    assert "error: [codex_threads] not additive: 1 difference(s) from the backup; first:" in errors
    assert any(line.startswith("  $: the backup does not parse (a number is outside the range of a double at line 1")
               for line in errors)
    assert "verification passed" not in done.stdout
    assert M not in done.stdout + done.stderr and str(big) not in done.stdout + done.stderr
    proof = json.loads(stores.call("store-migrate", "verify", "--additive", "--json", str(manifest), check=1).stdout)
    assert proof["additive_checked"] is True
    assert proof["stores"][2]["additive"]["ok"] is False and proof["stores"][2]["additive"]["differences"] == 4
    assert proof["stores"][2]["additive"]["first"][3] == {
        "pointer": "$.shouts[1].zone", "message": "is missing in the live store (the backup holds a string there)"}


def test_a_member_named_twice_in_the_backup_is_a_loss(stores: Stores, samples: None) -> None:
    befores, afters = _clean_earlier(stores)
    befores["domain"] = (b'{"shouts": [{"id": 3, "body": "' + M.encode() + b'", "body": "kept"}],\n'
                         b' "zz": {"a": 1, "a": 2}}')
    afters["domain"] = migrate("domain", jsonio.decode(befores["domain"]))  # the last of each kept, as it did
    manifest = earlier_run(stores, befores, afters)
    errors = stores.call(VERIFY, str(manifest), "--additive", check=1).stderr.splitlines()
    assert "error: [domain] not additive: 2 difference(s) from the backup; first:" in errors
    assert ("  $.shouts[0]: names a member twice in the backup (again at line 1, column 53 (byte 52)): the live store "
            "can hold only one of the two (the earlier implementation kept the last)") in errors
    assert any(line.startswith("  $[#1]: names a member twice in the backup (again at line 2") for line in errors)


def test_a_wrongly_typed_key_replaced_with_an_empty_one_is_a_loss(stores: Stores, samples: None) -> None:
    befores, afters = _clean_earlier(stores)
    befores["auth"] = json.dumps({"sessions": [M], "access_index": None, "challenges": []}).encode()
    afters["auth"] = migrate("auth", {})  # the earlier implementation wiped what it could not type
    manifest = earlier_run(stores, befores, afters)
    done = stores.call(VERIFY, str(manifest), "--additive", check=1)
    assert "  $.sessions: was an array, now an object" in done.stderr.splitlines()
    assert "error: [auth] not additive: 1 difference(s) from the backup; first:" in done.stderr  # null and [] are fine


def test_counters_may_be_raised_by_the_counter_rule_only(stores: Stores, samples: None) -> None:
    befores, afters = _clean_earlier(stores)
    domain = {"shouts": [{"id": 41}], "next_shout_id": 5, "whispers": [{"id": 2}], "next_whisper_id": 9,
              "user_integration_audits": [{"id": 12}]}
    befores["domain"] = json.dumps(domain).encode()
    live = jsonio.decode(migrate("domain", domain))
    assert (live["next_shout_id"], live["next_whisper_id"], live["next_user_integration_audit_id"]) == (42, 9, 13)
    afters["domain"] = jsonio.encode(live)
    manifest = earlier_run(stores, befores, afters)
    stores.call(VERIFY, str(manifest), "--additive", "--allow-unreadable", check=0)  # rows of ids only

    live.update(next_shout_id=40, next_whisper_id=3, next_user_integration_audit_id=13.0)
    afters["domain"] = jsonio.encode(live)
    for path in (stores.work / "backups", stores.work / "manifests"):
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        path.rmdir()
    manifest = earlier_run(stores, befores, afters)
    errors = stores.call(VERIFY, str(manifest), "--additive", check=1).stderr.splitlines()
    assert "error: [domain] not additive: 3 difference(s) from the backup; first:" in errors
    assert "  $.next_shout_id: counter is 40; from the backup (5 and its rows) the counter rule gives 42" in errors
    assert "  $.next_whisper_id: counter is 3; from the backup (9 and its rows) the counter rule gives 9" in errors
    assert ("  $.next_user_integration_audit_id: counter is a number with a fraction or exponent; from the backup "
            "(absent and its rows) the counter rule gives 13") in errors


def test_a_backup_that_is_missing_or_not_the_manifests_proves_nothing(stores: Stores, migrated: Path) -> None:
    entries = {e["store"]: e for e in load_json(migrated)["stores"]}
    Path(entries["auth"]["backup_path"]).unlink()
    Path(entries["domain"]["backup_path"]).write_bytes(b"{}")
    codex = Path(entries["codex_threads"]["backup_path"])
    codex.unlink()
    codex.symlink_to(stores.paths["codex_threads"])  # a planted link is never followed
    errors = stores.call(VERIFY, str(migrated), "--additive", check=1).stderr.splitlines()
    assert f"error: [auth] not additive: cannot be proven: backup missing: {entries['auth']['backup_path']}" in errors
    assert (f"error: [domain] not additive: cannot be proven: backup {entries['domain']['backup_path']} "
            "does not hash to before_sha256") in errors
    assert (f"error: [codex_threads] not additive: cannot be proven: backup unreadable: {codex} "
            "(Too many levels of symbolic links)") in errors
    # The check of each backup says what plain verify says, though the proof alone read and hashed it
    plain = stores.call(VERIFY, str(migrated), check=1).stderr.splitlines()
    told = [line for line in plain if "] backup " in line]
    assert len(told) == 3 and all(line in errors for line in told), (told, errors)
    actual = plain[plain.index(f"error: [domain] backup sha mismatch: {entries['domain']['backup_path']}") + 2]
    assert actual == f"  actual:   {hashlib.sha256(b'{}').hexdigest()}" and actual in errors


def test_records_the_service_added_since_are_no_loss(stores: Stores, migrated: Path) -> None:
    live = jsonio.decode(stores.paths["domain"].read_bytes())
    live["shouts"].append({"id": 42, "body": M})
    live["autopilots"][f"{M}-new"] = {"id": M}
    live["next_shout_id"] = 43
    stores.paths["domain"].write_bytes(jsonio.encode(live))
    done = stores.call(VERIFY, str(migrated), "--additive", check=1)  # the checksum and the counts fail
    assert "error: [domain] sha mismatch" in done.stderr
    assert "error: [domain] not additive" not in done.stderr
    assert "additive: [domain] nothing lost or changed (walk)" in done.stdout.splitlines()


def test_the_report_has_an_additive_row(stores: Stores, migrated: Path, tmp_path: Path) -> None:
    report = tmp_path / "evidence.md"
    stores.call(VERIFY, str(migrated), "--report", str(report), check=0)
    assert "- additive (nothing lost or changed): not checked (`verify --additive` checks it)" in report.read_text()
    stores.call(VERIFY, str(migrated), "--additive", "--report", str(report), check=0)
    text = report.read_text()
    assert "- additive (nothing lost or changed): yes, every store holds all its backup held" in text
    assert f"| domain | `{stores.paths['domain']}` | yes | yes | yes | yes | ok |" in text
    entries = {e["store"]: e for e in load_json(migrated)["stores"]}
    live = jsonio.decode(stores.paths["domain"].read_bytes())
    live["shouts"][0]["id"] = float(live["shouts"][0]["id"])
    stores.paths["domain"].write_bytes(jsonio.encode(live))
    stores.call(VERIFY, str(migrated), "--additive", "--report", str(report), check=1)
    text = report.read_text()
    assert "- additive (nothing lost or changed): NO: domain" in text
    assert "| NO (1 differences) | FAILED |" in text
    assert "- domain (additive): `$.shouts[0].id` was an integer, now a number with a fraction or exponent" in text
    assert entries["domain"]["after_sha256"] in text


# ------------------------------------------------------------------------------ the library


def _entry(kind: str, backup: Path | None, before: bytes | None) -> StoreEntry:
    return StoreEntry(kind, "/store", before is not None, None if backup is None else str(backup),
                      None if before is None else hashlib.sha256(before).hexdigest(), "0" * 64, True, {})


def check_bytes(kind: str, before: bytes, after: bytes) -> additive.Additive:
    with tempfile.TemporaryDirectory() as directory:
        backup, live = Path(directory, "backup.bak.json"), Path(directory, "live.json")
        backup.write_bytes(before)
        live.write_bytes(after)
        return additive.check(_entry(kind, backup, before), str(live))


GOLDEN_PAIRS = sorted(p.name.removesuffix(".in.json") for p in GOLDEN.glob("*.in.json")
                      if (GOLDEN / p.name.replace(".in.json", ".out.json")).exists())


@pytest.mark.parametrize("name", GOLDEN_PAIRS)
def test_every_golden_output_holds_its_input(name: str) -> None:
    kind = {"auth": "auth", "codex": "codex_threads", "domain": "domain"}[name.split("-")[0]]
    result = check_bytes(kind, (GOLDEN / f"{name}.in.json").read_bytes(), (GOLDEN / f"{name}.out.json").read_bytes())
    assert result.ok and result.method == "canonical", result


def test_records_the_service_cannot_read_are_decoded_by_the_fast_path_and_changes_to_them_found() -> None:
    """Readable or not is verify's question, not the proof's: a backup with a timestamp that is not
    RFC 3339 and an id above 2^64-1 (the one-pass decode of a run declines it) is decoded by the
    proof's one-pass decode all the same, proven by its canonical bytes, and a change to either
    value is still found."""
    value = jsonio.decode((EXAMPLES / "rust-domain-store.json").read_bytes())
    value["shouts"][0]["created_at"] = "yesterday"
    value["shouts"][1]["id"] = 2**64 + 5
    before = msgspec.json.encode(value)
    with pytest.raises(typed.Declined):
        typed.decode(store_kind("domain"), before)
    assert additive._typed(store_kind("domain"), before) is not None
    after = migrate("domain", value)
    proven = check_bytes("domain", before, after)
    assert proven.ok and proven.method == "canonical", proven
    for field, other in (("created_at", "today"), ("id", 2**64 + 6)):
        live = jsonio.decode(after)
        live["shouts"][0 if field == "created_at" else 1][field] = other
        found = check_bytes("domain", before, jsonio.encode(live))
        assert not found.ok and found.method == "walk" and found.count == 1, found
        assert found.differences[0].pointer == f"$.shouts[{0 if field == 'created_at' else 1}].{field}"


def test_numbers_compare_by_exact_value_and_type() -> None:
    cases = [(1, 1.0), (1, True), (0, False), (0.0, -0.0), (2**64, 2**64 + 1), (0.1, 0.30000000000000004 - 0.2),
             (1e16, 10000000000000002.0), ("1", 1), (None, 0), (None, False), ([1], [1.0]), ({"a": 1}, {"a": "1"})]
    for before, after in cases:
        result = check_bytes("codex_threads", jsonio.encode_compact({"x": before}), jsonio.encode({"x": after}))
        assert not result.ok and result.count == 1, (before, after)
        assert result.differences[0].pointer in ("$[#0]", "$[#0][0]", "$[#0][#0]")
    for same in (1, 1.5, -0.0, 2**70, True, None, "é", [], {}):
        assert check_bytes("codex_threads", json.dumps({"x": same}).encode(), jsonio.encode({"x": same})).ok


def test_a_shorter_array_and_a_missing_key_are_differences() -> None:
    result = check_bytes("domain", b'{"shouts": [{"id": 1}, {"id": 2}], "zz": {"k": [1, 2, 3]}}',
                         jsonio.encode({"shouts": [{"id": 1}], "zz": {"k": [1, 2]}, "next_shout_id": 3}))
    assert [(d.pointer, d.message) for d in result.differences] == [
        ("$.shouts", "has 1 items in the live store, 2 in the backup"),
        ("$[#1][#0]", "has 2 items in the live store, 3 in the backup"),
    ]
    result = check_bytes("domain", b'{"zz": 1, "shouts": null}', jsonio.encode({"shouts": []}))
    assert [(d.pointer, d.message) for d in result.differences] == [
        ("$[#1]", "is missing in the live store (the backup holds an integer there)")]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, held in value.items():
            found += _paths(held, (*path, key))
    elif isinstance(value, list):
        for index, held in enumerate(value):
            found += _paths(held, (*path, index))
    return found


def _changed(value: Any) -> Any:
    """Something that is not `value` by the exact rule (type, value, sign of zero)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value) if abs(value) < 2**53 else value + 1
    if isinstance(value, float):
        return -value if value else (-0.0 if str(value) == "0.0" else 0.0)
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return False
    return None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["auth", "codex_threads", "domain"]), st.data())
def test_a_migration_is_additive_and_any_change_to_a_backup_member_is_found(kind_name: str, data: st.DataObject) -> None:
    kind = store_kind(kind_name)
    value = data.draw(store_values(kind_name))
    before = msgspec.json.encode(value)  # the backup as someone else wrote it: file order, compact
    try:
        after = migrate(kind_name, value)
    except transform.ShapeRefusal:
        assume(False)
    first = check_bytes(kind_name, before, after)
    assert first.ok and first.method in ("canonical", "unchanged"), first
    walked = check_bytes(kind_name, before, jsonio.encode_compact(jsonio.decode(after)))  # not canonical: walked
    assert walked.ok and walked.method in ("walk", "unchanged"), walked

    live = jsonio.decode(after)
    counters = {c.name for c in kind.counters}
    emptied = {k for k, held in value.items() if k in kind.containers and held in (None, [], {})}
    candidates = [p for p in _paths(value) if p[0] not in counters and p[0] not in emptied]
    assume(candidates)
    path = data.draw(st.sampled_from(candidates))
    parent = live
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = _changed(parent[path[-1]])
    found = check_bytes(kind_name, before, jsonio.encode(live))
    assert not found.ok and found.count >= 1 and found.method == "walk", (path, found)
    assert found.count == check_bytes(kind_name, before, jsonio.encode_compact(live)).count


def test_the_log_event_names_no_value(stores: Stores) -> None:
    before = json.dumps({"access_index": {M: M}}).encode()
    manifest = earlier_run(stores, {"auth": before}, {"auth": migrate("auth", {}), "codex_threads": migrate(
        "codex_threads", {}), "domain": migrate("domain", {})})
    done = stores.call(VERIFY, str(manifest), "--additive", check=1)
    event = next(e for e in log_events(done.stderr) if e["event"] == "store.additive" and e["store"] == "auth")
    assert event["additive"] is False and event["first"] == [
        "$.access_index[#0]: is missing in the live store (the backup holds a string there)"]
    assert M not in done.stderr + done.stdout
    assert os.path.exists(manifest)
