"""Every worked case in tests/golden/ (copied from the shared contract) through the real CLI."""

from __future__ import annotations

import hashlib
import os

import pytest
from conftest import GOLDEN, Stores, load_json, log_events

from store_migrate.core import transform
from store_migrate.core.stores import store_kind
from store_migrate.readable import jsonio

KIND_OF = {
    "auth-empty-object": "auth",
    "auth-partial": "auth",
    "codex-unicode-and-escapes": "codex_threads",
    "codex-numbers": "codex_threads",
    "domain-counters-from-rows": "domain",
    "domain-counter-kept-when-ahead": "domain",
    "domain-stale-counter-raised": "domain",
    "domain-null-and-empty-wrong-containers": "domain",
    "domain-u64-max-id": "domain",
    "refuse-unparseable": "auth",
    "refuse-number-out-of-range": "auth",
    "refuse-root-not-object": "codex_threads",
    "refuse-non-empty-wrong-container": "auth",
    "refuse-bom": "domain",
    "refuse-invalid-utf8": "domain",
    "refuse-lone-surrogate": "domain",
}
REFUSE_REASON = {
    "refuse-unparseable": ("unexpected end of file", "line 1, column 35"),
    "refuse-number-out-of-range": ("a number is outside the range of a double", "line 1, column 7"),
    "refuse-root-not-object": ("root is an array", "at $"),
    "refuse-non-empty-wrong-container": ("'sessions' must hold an object", "at $.sessions"),
    "refuse-bom": ("byte-order mark", "line 1, column 1"),
    "refuse-invalid-utf8": ("invalid UTF-8", "line 1, column 21"),
    "refuse-lone-surrogate": ("lone surrogate", "line 1, column 21"),
}
TRANSFORM_CASES = sorted(name for name in KIND_OF if not name.startswith("refuse-"))
REFUSE_CASES = sorted(name for name in KIND_OF if name.startswith("refuse-"))


def test_every_golden_file_is_covered() -> None:
    names = {p.name.removesuffix(".in.json") for p in GOLDEN.glob("*.in.json")}
    assert names == set(KIND_OF)


@pytest.mark.parametrize("name", TRANSFORM_CASES)
def test_library_reproduces_golden_bytes(name: str) -> None:
    value = jsonio.decode((GOLDEN / f"{name}.in.json").read_bytes())
    out = jsonio.encode(transform.backfill(store_kind(KIND_OF[name]), value).value)
    assert out == (GOLDEN / f"{name}.out.json").read_bytes()
    again = jsonio.encode(transform.backfill(store_kind(KIND_OF[name]), jsonio.decode(out)).value)
    assert again == out, "the transform must be idempotent on bytes"


@pytest.mark.parametrize("name", TRANSFORM_CASES)
def test_run_writes_golden_bytes(stores: Stores, name: str) -> None:
    kind = KIND_OF[name]
    stores.write(kind, (GOLDEN / f"{name}.in.json").read_bytes())
    stores.call("store-migrate", "run", check=0)
    expected = (GOLDEN / f"{name}.out.json").read_bytes()
    assert stores.paths[kind].read_bytes() == expected
    entry = next(e for e in load_json(stores.newest_manifest())["stores"] if e["store"] == kind)
    assert entry["changed"] is True
    assert entry["after_sha256"] == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("name", REFUSE_CASES)
def test_run_refuses_and_writes_nothing(stores: Stores, name: str) -> None:
    kind = KIND_OF[name]
    original = (GOLDEN / f"{name}.in.json").read_bytes()
    path = stores.write(kind, original)
    mtime = os.stat(path).st_mtime_ns
    before_listing = sorted(os.listdir(path.parent))
    done = stores.call("store-migrate", "run", check=1)
    reason, position = REFUSE_REASON[name]
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, done.stderr
    assert str(path) in error[0] and reason in error[0] and position in error[0], error[0]
    assert path.read_bytes() == original and os.stat(path).st_mtime_ns == mtime
    assert sorted(os.listdir(path.parent)) == before_listing, "no other store, temp or lock file appears"
    assert not stores.work.exists(), "no backup and no manifest"
    assert done.stdout == ""
    assert any(e["event"] == "store.refused" for e in log_events(done.stderr))


def test_refused_store_content_never_reaches_the_logs(stores: Stores) -> None:
    secret = "oa_rt_super_secret_refresh_token"
    stores.write("auth", f'{{"sessions": ["{secret}"]}}')
    done = stores.call("store-migrate", "run", check=1)
    assert secret not in done.stderr + done.stdout


@pytest.mark.parametrize("name", TRANSFORM_CASES)
def test_golden_outputs_are_fixed_points(stores: Stores, name: str) -> None:
    """A store already in its golden output form is not rewritten and reports changed: false."""
    kind = KIND_OF[name]
    expected = (GOLDEN / f"{name}.out.json").read_bytes()
    path = stores.write(kind, expected)
    inode = os.stat(path).st_ino
    stores.call("store-migrate", "run", check=0)
    entry = next(e for e in load_json(stores.newest_manifest())["stores"] if e["store"] == kind)
    assert entry["changed"] is False and entry["before_sha256"] == entry["after_sha256"]
    assert path.read_bytes() == expected and os.stat(path).st_ino == inode
