"""`store-migrate wrappers DIR`: write the three drop-in wrapper scripts into a service checkout.

The wrappers are the files in the project's `scripts/`; the package reaches them as
`store_migrate/scripts/` (a link in the checkout, copied into the wheel when it is built), so a
wheel install writes exactly the files a checkout runs. Each wrapper is self-contained: it finds
the entry point in $STORE_MIGRATE_BIN_DIR, a .venv beside its directory, or on PATH.

A file is created exclusively, 0755, through `durable`: a name already taken (a file, a link,
even a dangling one) is refused before anything is written, unless `force`, which replaces what
is there atomically; a link is then replaced by the file, never written through.
"""

from __future__ import annotations

import os
from importlib import resources

from store_migrate.errors import StoreMigrateError
from store_migrate.fs import durable

NAMES = (
    "run-rust-ownership-backfill.sh",
    "verify-rust-ownership-backfill.sh",
    "rollback-rust-ownership-backfill.sh",
)
MODE = 0o755


class WrappersNotWritten(StoreMigrateError):
    """The wrappers cannot be written where asked: nothing was written."""


def content(name: str) -> bytes:
    """The wrapper `name` as this installation carries it."""
    return resources.files("store_migrate").joinpath("scripts", name).read_bytes()


def write(directory: str, *, force: bool = False) -> list[str]:
    """Write the three wrappers into `directory` (which must exist); their paths."""
    if not os.path.isdir(directory):
        raise WrappersNotWritten(f"{directory} is not a directory",
                                 hint="create it first, or give the directory that held the earlier wrappers")
    targets = [os.path.join(directory, name) for name in NAMES]
    taken = [path for path in targets if os.path.lexists(path)]
    if taken and not force:
        raise WrappersNotWritten(
            f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; nothing was written",
            hint="rerun with --force to replace them",
        )
    written: list[str] = []
    for path in targets:
        data = content(os.path.basename(path))
        if force:
            durable.atomic_replace(path, data, mode=MODE)
        else:
            try:
                durable.create_new(path, data, mode=MODE)
            except FileExistsError:
                raise WrappersNotWritten(
                    f"{path} appeared while the wrappers were written (written: {', '.join(written) or 'none'})",
                    hint="check who else writes there, then rerun (--force replaces)") from None
        written.append(path)
    return written
