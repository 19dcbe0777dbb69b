"""Generate realistic stores (rows shaped as the service writes them) of a given size.

    python bench/generate.py OUT_DIR [--codex-mb 200] [--auth-mb 50] [--domain-mb 50] [--seed 1]

The stores are in the old shape (some keys missing, stale counters), so a run has work to do.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

TS = "2026-03-04T05:06:07Z"


def _words(rng: random.Random, n: int) -> str:
    vocabulary = ["deploy", "store", "cutover", "verify", "rollback", "manifest", "thread", "token",
                  "canary", "release", "émigré", "✓", "naïve", "data", "shape", "counter"]
    return " ".join(rng.choice(vocabulary) for _ in range(n))


def _fill(target_bytes: int, make: Callable[[int], tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    size, i = 0, 0
    while size < target_bytes:
        key, row = make(i)
        size += len(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()) + len(key) + 4
        i += 1
        yield key, row


def codex(target: int, rng: random.Random) -> dict[str, Any]:
    threads: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    per_thread = 20
    for _, row in _fill(target, lambda i: (f"thread-{i}", {
        "message_id": f"m-{i}", "thread_id": f"thread-{i // per_thread}", "user_id": f"user-{i % 997}",
        "role": "user" if i % 2 else "assistant", "text": _words(rng, rng.randint(10, 60)), "created_at": TS,
    })):
        thread = row["thread_id"]
        if thread not in threads:
            threads[thread] = {"thread_id": thread, "user_id": row["user_id"], "org_id": "org-1",
                               "autopilot_id": None, "title": _words(rng, 4), "created_at": TS,
                               "updated_at": TS, "message_count": per_thread, "last_message_at": TS}
            messages[thread] = []
        messages[thread].append(row)
    return {"threads": threads, "messages_by_thread": messages}


def auth(target: int, rng: random.Random) -> dict[str, Any]:
    sessions: dict[str, Any] = {}
    users: dict[str, Any] = {}
    for key, row in _fill(target, lambda i: (f"sess-{i}", {
        "session_id": f"sess-{i}", "user_id": f"user-{i // 3}", "email": f"u{i // 3}@example.com",
        "device_id": f"dev-{i}", "token_name": "cli", "active_org_id": "org-1",
        "access_token": f"oa_at_{rng.getrandbits(128):032x}", "refresh_token": f"oa_rt_{rng.getrandbits(128):032x}",
        "refresh_token_id": f"rt-{i}", "issued_at": TS, "access_expires_at": TS, "refresh_expires_at": TS,
        "status": "active", "reauth_required": False, "last_refreshed_at": None,
    })):
        sessions[key] = row
        users.setdefault(row["user_id"], {"id": row["user_id"], "email": row["email"], "name": "User",
                                          "workos_user_id": f"wos-{row['user_id']}", "memberships": [
                                              {"org_id": "org-1", "org_slug": "acme", "role": "member",
                                               "role_scopes": ["read"], "default_org": True}]})
    return {"sessions": sessions, "users_by_id": users, "access_index": {}, "personal_access_tokens": None}


def domain(target: int, rng: random.Random) -> dict[str, Any]:
    shouts: list[Any] = []
    audits: list[Any] = []
    for _, row in _fill(target, lambda i: (str(i), {
        "id": i + 1, "user_id": f"user-{i % 997}", "zone": None, "body": _words(rng, rng.randint(5, 30)),
        "visibility": "public", "created_at": TS, "updated_at": TS,
    })):
        (shouts if row["id"] % 4 else audits).append(row)
    for row in audits:
        row.update(provider="resend", action="connected", metadata={"k": row["body"][:10]}, user_integration_id=None)
        del row["body"], row["zone"], row["visibility"]
    return {"shouts": shouts, "user_integration_audits": audits, "next_shout_id": 1, "whispers": None}


FILES = {"auth": "rust-auth-store.json", "codex_threads": "rust-codex-thread-store.json",
         "domain": "rust-domain-store.json"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--codex-mb", type=float, default=200)
    parser.add_argument("--auth-mb", type=float, default=50)
    parser.add_argument("--domain-mb", type=float, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    for kind, make, mb in (("auth", auth, args.auth_mb), ("codex_threads", codex, args.codex_mb),
                           ("domain", domain, args.domain_mb)):
        path = os.path.join(args.out_dir, FILES[kind])
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(make(int(mb * 1e6), rng), handle, ensure_ascii=False, separators=(",", ":"))
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
