#!/usr/bin/env bash
# Backfill the auth, codex-thread and domain stores to the current shape (drop-in wrapper).
# Environment: AUTH_STORE_PATH, CODEX_THREAD_STORE_PATH, DOMAIN_STORE_PATH, WORK_DIR, ROOT_DIR
# (here, in <root>/apps/openagents.com/service/scripts/, <root>), DRY_RUN, ALLOW_MISSING.
# Prints the manifest and backup paths; see README.md. Extra arguments reach the tool.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/entry-point.sh"
store_migrate_exec store-migrate-backfill "$@"
