#!/usr/bin/env bash
# A full drill on copies of the bundled sample stores: backfill, verify, rollback, and a check
# that every store is back to its exact pre-run bytes. Uses only the drop-in wrappers.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo="$(mktemp -d "${TMPDIR:-/tmp}/store-migrate-demo.XXXXXX")"
trap 'rm -rf "$demo"' EXIT
cp "$project"/examples/stores/*.json "$demo/"
export AUTH_STORE_PATH="$demo/rust-auth-store.json"
export CODEX_THREAD_STORE_PATH="$demo/rust-codex-thread-store.json"
export DOMAIN_STORE_PATH="$demo/rust-domain-store.json"
export WORK_DIR="$demo/work"
export STORE_MIGRATE_LOG_FORMAT="${STORE_MIGRATE_LOG_FORMAT:-console}"
(cd "$demo" && sha256sum rust-*.json > before.sha256)

echo "== 1. backfill (scripts/run-rust-ownership-backfill.sh)"
"$project/scripts/run-rust-ownership-backfill.sh"
manifest="$(ls -1 "$WORK_DIR"/manifests/*.json | sort | tail -n 1)"

echo "== 2. verify (scripts/verify-rust-ownership-backfill.sh)"
"$project/scripts/verify-rust-ownership-backfill.sh" "$manifest"

echo "== 3. rerun: idempotent, nothing changes"
(cd "$demo" && sha256sum rust-*.json > migrated.sha256)
# A rerun that changes no store writes no manifest: its stdout lines name the first run's.
rerun="$("$project/scripts/run-rust-ownership-backfill.sh" 2>/dev/null | sed -n 's/^\[rust-store-backfill\] manifest: //p')"
if [[ "$rerun" != "$manifest" || "$(ls -1 "$WORK_DIR"/manifests/*.json | wc -l)" -ne 1 ]]; then
  echo "error: the rerun wrote a manifest of its own: $rerun" >&2
  exit 1
fi
(cd "$demo" && sha256sum --quiet -c migrated.sha256)
echo "stores unchanged on rerun: 3 (no new manifest; the rerun names $rerun)"

echo "== 4. rollback drill (scripts/rollback-rust-ownership-backfill.sh)"
"$project/scripts/rollback-rust-ownership-backfill.sh" "$manifest"
(cd "$demo" && sha256sum -c before.sha256)
echo "== drill passed: every store is back to its exact pre-run bytes"
