"""Store contents kept out of every output: map members named by position, decoder messages
reduced to their reason and path.

Stores hold access and refresh tokens and e-mail addresses, as values and as map keys
(`access_index`, `refresh_index`, `users_by_email`), so nothing the tool prints, logs or writes
into a report may quote a key or a value read from a store:

- a member of a map is named by its position in the map's keys sorted by code point, `[#12]`,
  which is what jq's `keys` lists (`jq '.access_index | keys[12]'` gives the key back);
- a message from msgspec (a decode or validation error) is cut down to its reason and its path:
  quoted values, unknown field names and numbers are dropped.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from typing import Any


class Positions:
    """Where members sit in their map's code-point-sorted keys (what `jq keys` lists).

    A map's keys are sorted only when a problem inside it is first named, then kept for the rest
    of the report: a store whose records are all readable sorts nothing, and a map of a million
    tokens is sorted once however many of its members are reported (about 0.5 s)."""

    def __init__(self) -> None:
        self._sorted: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def of(self, container: dict[str, Any], key: str) -> int:
        """The position of `key` among the keys of `container`, sorted by code point."""
        held = self._sorted.get(id(container))
        if held is None or held[0] is not container:  # the map is kept, so its id stays its own
            held = self._sorted[id(container)] = (container, sorted(container))
        return bisect_left(held[1], key)

    def member(self, container: dict[str, Any], key: str) -> str:
        """`[#N]`: the pointer step to the member `key` of `container`."""
        return f"[#{self.of(container, key)}]"


_PATH = re.compile(r"\$(?:\.[A-Za-z_]\w*|\[(?:\d+|\.\.\.)\])*")
"""A msgspec error path: struct fields (schema names), list indices, `[...]` for any map key."""
_BYTE = re.compile(r" ?\(byte (\d+)\)$")
_SAFE = re.compile(
    r"Expected `[a-z0-9_ |]+`(?: (?:>=|<=) -?\d+| of length (?:>=|<=) \d+)?(?:, got `[a-z0-9_]+`)?"
    r"|Expected `[a-z]+` with(?: no)? timezone component"
    r"|Object missing required field `[A-Za-z_]\w*`"
    r"|[A-Za-z_]\w* is above the u64 maximum"
    r"|JSON is malformed: [a-z0-9 -]+(?:'[^\w\s]'(?: or '[^\w\s]')?)?"
)
"""Reasons that hold only words of msgspec's and names or bounds from the schema files."""
_REGEX = re.compile(r"Expected `str` matching regex .*")
_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9]*(?: [A-Za-z][A-Za-z0-9]*)*")


def decoder_message(message: str) -> str:
    """A msgspec error message (`<reason> - at `<path>``) as its reason and its path, without a
    quoted value, an unknown field's name or a number from the data: `Invalid enum value 'x' - at
    `$.sessions[...].status`` becomes `Invalid enum value (at $.sessions[...].status)`.

    A reason known to hold only msgspec's words and the schema's names is kept whole; any other
    is cut to the plain words it starts with."""
    reason, at, path = message.rpartition(" - at `")
    if not at:
        reason, path = message, ""
    path = path.removesuffix("`")
    byte = _BYTE.search(reason)
    if byte is not None:
        reason = reason[: byte.start()]
    if _REGEX.fullmatch(reason):
        reason = "Expected `str` matching the schema's pattern"
    elif not _SAFE.fullmatch(reason):
        words = _WORDS.match(reason)
        reason = words.group(0) if words else "rejected"
    if byte is not None:
        reason += f" (byte {byte.group(1)})"
    return f"{reason} (at {path})" if path and _PATH.fullmatch(path) else reason
