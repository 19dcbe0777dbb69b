#!/usr/bin/env bash
# Verify a backfill manifest: checksums, shapes, counts and backups (drop-in wrapper).
# Usage: verify-rust-ownership-backfill.sh <manifest-path> [options]; VERIFY_STRICT=1 adds --strict,
# VERIFY_ALLOW_UNREADABLE=1 adds --allow-unreadable.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 <manifest-path>" >&2
  exit 1
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib/entry-point.sh"
store_migrate_exec store-migrate-verify "$@"
