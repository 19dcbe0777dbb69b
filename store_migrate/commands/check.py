"""`check`: can the service read each file as a store of a kind? Reads only; writes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from store_migrate.commands.prepare import HOLES, read_store, validated
from store_migrate.core.stores import store_kind
from store_migrate.fs import ondisk
from store_migrate.readable import duplicates, jsonio, parsing, validate

log = structlog.get_logger("store_migrate")


@dataclass
class FileCheck:
    path: str
    kind: str
    report: validate.Report
    failure: str | None = None
    """Why the file as a whole cannot be read (not found, empty, does not parse), if it cannot."""


def check(kind_name: str, paths: list[str], *, limit: int = validate.DEFAULT_LIMIT) -> list[FileCheck]:
    """Can the service read each file as a store of `kind_name`? Reads only; writes nothing."""
    kind = store_kind(kind_name)
    results = []
    for path in paths:
        report = validate.Report(kind.name)
        hole = ondisk.first_hole(path)  # before reading: a 64 GB sparse file would be read whole
        snapshot = None if hole is not None else read_store(kind.name, path)
        failure = None
        if hole is not None:
            failure = f"{HOLES} at byte {hole}"
        elif snapshot is None:
            failure = "not found"
        elif not snapshot.data:
            failure = "the file is empty (the service cannot parse it)"
        else:
            try:
                value = parsing.general(snapshot.data).tree
            except parsing.NotParsed as exc:
                failure = str(exc)
            else:
                report = validated(kind.name, path, value, jsonio.indent(snapshot.data), limit)
                duplicates.add_to(report, kind, snapshot.data, value, limit)
        if failure:
            report.unreadable, report.problems = 1, [validate.Problem("$", failure)]
            log.warning("store.validated", store=kind.name, path=path, readable=False, unreadable=1,
                        problems=[f"$: {failure}"])
        results.append(FileCheck(path, kind.name, report, failure))
    return results
