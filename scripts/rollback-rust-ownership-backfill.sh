#!/usr/bin/env bash
# Roll the stores back to their state before a backfill run (drop-in wrapper).
# Usage: rollback-rust-ownership-backfill.sh <manifest-path> [--force]
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 <manifest-path>" >&2
  exit 1
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib/entry-point.sh"
store_migrate_exec store-migrate-rollback "$@"
