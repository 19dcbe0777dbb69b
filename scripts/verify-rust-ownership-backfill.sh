#!/usr/bin/env bash
# Verify a backfill manifest: checksums, shapes, counts and backups (drop-in wrapper).
# Usage: verify-rust-ownership-backfill.sh <manifest-path> [options]; VERIFY_STRICT=1 adds --strict,
# VERIFY_ALLOW_UNREADABLE=1 adds --allow-unreadable.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 <manifest-path>" >&2
  exit 1
fi
tool=store-migrate-verify
# -- Finding store-migrate: the same lines in the three wrappers (tests/test_install.py). --------
# The entry point is looked for in $STORE_MIGRATE_BIN_DIR (when set), then in the .venv beside this
# directory (a checkout of store-migrate after `make install`), then on PATH (store-migrate installed
# from its wheel). The tool is told where the wrapper sits (STORE_MIGRATE_WRAPPER_DIR): a wrapper at
# <root>/apps/openagents.com/service/scripts/ works on <root>'s stores, as the earlier ones did.
here="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
export STORE_MIGRATE_WRAPPER_DIR="$here"
if [[ -n "${STORE_MIGRATE_BIN_DIR:-}" ]]; then
  entry="$STORE_MIGRATE_BIN_DIR/$tool"
  if [[ ! -x "$entry" ]]; then
    echo "error: STORE_MIGRATE_BIN_DIR is set but $entry is not an executable" >&2
    exit 1
  fi
elif [[ -x "$here/../.venv/bin/$tool" ]]; then
  entry="$here/../.venv/bin/$tool"
elif ! entry="$(command -v "$tool")"; then
  checkout="$(CDPATH='' cd -- "$here/.." && pwd)"
  if [[ -f "$checkout/Makefile" ]] && grep -qx 'name = "store-migrate"' "$checkout/pyproject.toml" 2>/dev/null; then
    echo "error: $tool not found; install it with 'make install' in $checkout, or set STORE_MIGRATE_BIN_DIR" >&2
  else
    echo "error: $tool not found on PATH; install store-migrate from its wheel (pip install" \
      "store_migrate-<version>-py3-none-any.whl), or set STORE_MIGRATE_BIN_DIR to the directory holding $tool" >&2
  fi
  exit 1
fi
exec "$entry" "$@"
