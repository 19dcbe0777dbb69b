# Sourced by the three wrappers: find a store-migrate entry point and exec it with the
# wrapper's arguments, so its exit code is the wrapper's. Looked for, in order:
#   1. $STORE_MIGRATE_BIN_DIR/<command>   (explicit override)
#   2. the project's own virtual environment (<project>/.venv/bin/<command>, from `make install`)
#   3. <command> on PATH (`pip install store-migrate`)
# It also tells the tool where the wrapper sits (STORE_MIGRATE_WRAPPER_DIR): a wrapper at
# <root>/apps/openagents.com/service/scripts/ works on <root>'s stores, as the earlier ones did
# (store_migrate/config.py decides).
STORE_MIGRATE_WRAPPER_DIR="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[1]}")" && pwd)"
export STORE_MIGRATE_WRAPPER_DIR
store_migrate_exec() {
  local command="$1"
  shift
  local project
  project="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  local candidate
  if [[ -n "${STORE_MIGRATE_BIN_DIR:-}" ]]; then
    candidate="$STORE_MIGRATE_BIN_DIR/$command"
    if [[ ! -x "$candidate" ]]; then
      echo "error: STORE_MIGRATE_BIN_DIR is set but $candidate is not an executable" >&2
      exit 1
    fi
  elif [[ -x "$project/.venv/bin/$command" ]]; then
    candidate="$project/.venv/bin/$command"
  elif candidate="$(command -v "$command")"; then
    :
  else
    echo "error: $command not found; install it with 'make install' in $project (or 'pip install $project'), or set STORE_MIGRATE_BIN_DIR" >&2
    exit 1
  fi
  exec "$candidate" "$@"
}
