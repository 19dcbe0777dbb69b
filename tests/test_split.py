"""A big map split over two workers gives exactly the bytes, counts and verdicts of the
ordinary path (thresholds lowered so small generated stores take the split path)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import store_values

from store_migrate import jsonio, split, transform, validate, workers
from store_migrate.stores import store_kind


@pytest.fixture(autouse=True)
def tiny_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split, "SPLIT_BYTES", 1)
    monkeypatch.setattr(split, "_BATCH_BYTES", 40)
    monkeypatch.setattr(workers, "PARALLEL_BYTES", 1)


def ordinary(kind_name: str, data: bytes) -> tuple[bytes, dict[str, int], validate.Report, Any]:
    kind = store_kind(kind_name)
    result = transform.backfill(kind, jsonio.decode(data))
    return (jsonio.encode(result.value), transform.counts(kind, result.value),
            validate.validate(kind_name, result.value, None), result)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["codex_threads", "auth", "domain"]), st.data())
def test_split_run_matches_the_ordinary_path(kind_name: str, data: st.DataObject) -> None:
    kind = store_kind(kind_name)
    value = data.draw(store_values(kind_name))
    raw = jsonio.encode_compact(value)
    try:
        expected_bytes, counts, report, result = ordinary(kind_name, raw)
    except transform.ShapeRefusal:
        return
    got = split.run_split(kind, raw, encode=True, limit=20)
    if got is None:
        return
    assert got.after == expected_bytes
    assert got.counts == counts
    assert got.report.unreadable == report.unreadable
    assert got.result is not None and got.result.added_keys == result.added_keys


def test_split_takes_the_big_map_of_a_real_looking_store() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import generate

    value = generate.codex(200_000, generate.random.Random(4))
    value["messages_by_thread"]["thread-1"][0]["created_at"] = "not a time"
    raw = jsonio.encode_compact(value)
    got = split.run_split(store_kind("codex_threads"), raw, encode=True, limit=20)
    assert got is not None
    expected_bytes, counts, report, _ = ordinary("codex_threads", raw)
    assert got.after == expected_bytes and got.counts == counts
    assert got.report.unreadable == report.unreadable == 1
    assert [p.to_json() for p in got.report.problems] == [p.to_json() for p in report.problems]
    as_is = split.run_split(store_kind("codex_threads"), raw, encode=False, limit=20)
    assert as_is is not None and as_is.after is None and as_is.report.unreadable == 1


def test_unusual_stores_fall_back() -> None:
    kind = store_kind("codex_threads")
    assert split.run_split(kind, b'{"messages_by_thread": [1]}', encode=True, limit=20) is None
    assert split.run_split(kind, b'{"messages_by_thread": {"t": [1e400]}}', encode=True, limit=20) is None
    assert split.run_split(kind, b'[1]', encode=True, limit=20) is None
    deep = b'{"messages_by_thread": {"t": ' + b"[" * 130 + b"]" * 130 + b"}}"
    assert split.run_split(kind, deep, encode=True, limit=20) is None
    assert copy.copy(split._members) == {} and split._keys == []


def test_run_and_verify_strict_through_the_split_path_agree_with_the_ordinary_path(
    stores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store_migrate import commands, config

    stores.write_samples()
    stores.write("domain", {"autopilots": {"a": {"id": 1}}, "shouts": [{"id": 2}], "keep": {"x": [1.5, 2**70]}})
    settings = config.resolve(environ=stores.environ, cwd=str(stores.root))
    dry_split = commands.dry_run(settings)
    outcome = commands.run(settings)
    split_check = commands.verify(outcome.manifest_path, strict=True)
    monkeypatch.setattr(split, "SPLIT_BYTES", 1 << 40)
    full_check = commands.verify(outcome.manifest_path, strict=True)
    def verdicts(result: Any) -> list[Any]:  # the same problems; which come first may differ
        return [(c.problems, c.report.unreadable, sorted(map(str, c.report.problems))) for c in result.stores]

    assert verdicts(split_check) == verdicts(full_check)
    assert split_check.stores[2].report is not None and split_check.stores[2].report.unreadable == 2
    dry_full = commands.dry_run(settings)
    assert [(p.after_sha256, p.counts) for p in dry_split] == [(e.after_sha256, e.counts) for e in outcome.manifest.stores]
    assert [p.after_sha256 for p in dry_full] == [e.after_sha256 for e in outcome.manifest.stores]
