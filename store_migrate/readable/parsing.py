"""Parsing a store: the one-pass typed decode first, the general parse when it declines.

The typed decode (typed.py) takes the usual store, one the service can read in full, straight into
compact structs that are already validated. It declines anything else, and says why (logged as
`store.general_path`, without store content); the general parse (jsonio.decode) then reads the
bytes as strict JSON into dicts and lists, and names what is wrong with bytes that are not JSON
(`NotParsed`). Both give the same tree for the transform, the counts and the encoder.

The two halves are separate functions because a run and `verify --strict` start the typed decode
while a thread still hashes the bytes, and a run lets go of the mapped file before the general
parse (prepare.py); `parse` is both, for a caller that has the bytes in hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from store_migrate.core.stores import StoreKind
from store_migrate.errors import located
from store_migrate.readable import jsonio, typed

log = structlog.get_logger("store_migrate")


@dataclass(frozen=True)
class Parsed:
    tree: Any
    """The store's value: top-level members in a dict, rows as structs (one pass) or dicts."""
    typed: bool
    """Whether the one-pass decode took it, which proves the service reads every record."""


class NotParsed(Exception):
    """The bytes are not strict JSON: why, and where when known (never what is there)."""

    def __init__(self, reason: str, position: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position

    def __str__(self) -> str:
        """`does not parse: <reason> at <position>`: a problem as verify and check list it."""
        return f"does not parse: {located(self.reason, self.position)}"


def one_pass(kind: StoreKind, path: str, data: bytes | memoryview) -> Parsed | None:
    """The store as typed.decode reads it; None when it declines (logged) or there are no bytes."""
    if not data:
        return None
    try:
        return Parsed(typed.decode(kind, data), True)
    except typed.Declined as exc:
        log.info("store.general_path", store=kind.name, path=path, reason=str(exc))
        return None


def general(data: bytes) -> Parsed:
    """The bytes parsed as strict JSON (jsonio.decode). Raises NotParsed."""
    try:
        return Parsed(jsonio.decode(data), False)
    except jsonio.JsonError as exc:
        raise NotParsed(exc.reason, exc.position(data)) from None


def parse(kind: StoreKind, path: str, data: bytes) -> Parsed:
    """`one_pass`, else `general`. Raises NotParsed."""
    return one_pass(kind, path, data) or general(data)
