"""Strict JSON parsing and the canonical byte form. The only module that knows the byte format.

Parsing is RFC 8259 strict: UTF-8 without a byte-order mark, no NaN/Infinity, no comments,
nothing after the value, numbers within the double range, no lone surrogate escapes. Integers
are kept exactly at any size; floats keep their exact double value.

Integers of any size: Python turns integers to and from decimal text only up to 4,300 digits
unless told otherwise (a guard for servers parsing untrusted input). Stores are the operator's
own files and a store's integers must come back byte for byte, so importing this module lifts
the limit for the process (workers are forked from it and keep it). msgspec has a limit of its
own: it reads integers of at most 4,300 characters, so a store holding a longer one is parsed
by the standard library's parser instead, made as strict (see `_decode_long_integers`).

Canonical bytes: keys sorted by code point at every depth, two-space indentation, one member
per line, `"key": value`, shortest round-trip floats, no trailing newline. msgspec produces
exactly this layout (measured: about 2.5 s to decode and re-encode a 230 MB store).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from store_migrate.core.redact import decoder_message

sys.set_int_max_str_digits(0)  # integers of any size (module docstring)

BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 128
"""The service's reader gives up at this many nested levels (the root object is level 1)."""

_encoder = msgspec.json.Encoder(order="sorted")
_typed_encoder = msgspec.json.Encoder(order="deterministic")
"""Maps sorted, struct fields as declared: canonical for the exact structs of structs.py, whose
fields are declared in code-point order (0.3 s against 0.45 s with "sorted" for a 200 MB store)."""
_decoder = msgspec.json.Decoder()
_BYTE_POS = re.compile(r"\(byte (\d+)\)")
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u(?:d[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|d[c-f][0-9a-f]{2})",
    re.IGNORECASE,
)
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)")


@dataclass(frozen=True)
class JsonError(Exception):
    """Why and where bytes are not strict JSON. `offset` is a byte offset, when known."""

    reason: str
    offset: int | None = None

    def position(self, data: bytes) -> str | None:
        """`line L, column C (byte B)` for the offset in `data`, or None."""
        if self.offset is None:
            return None
        line = data.count(b"\n", 0, self.offset) + 1
        column = self.offset - (data.rfind(b"\n", 0, self.offset) + 1) + 1
        return f"line {line}, column {column} (byte {self.offset})"

    def __str__(self) -> str:
        return self.reason


def decode(data: bytes) -> Any:
    """Parse `data` as strict JSON. Raises JsonError with a reason an operator understands."""
    if data.startswith(BOM):
        raise JsonError("file starts with a UTF-8 byte-order mark (BOM), which JSON forbids", 0)
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        if str(exc).startswith(_LONG_INTEGER):
            return _decode_long_integers(data, exc)
        raise _diagnose(data, exc) from None
    except RecursionError:
        raise JsonError("nesting too deep to parse") from None


_LONG_INTEGER = "Integer value out of range"
"""msgspec's message for an integer of more than 4,300 characters (the only one it cannot read
once Python's own digit limit is lifted)."""


class _NotJson(ValueError):
    pass


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise _NotJson(text)
    return number


def _no_constant(text: str) -> Any:
    raise _NotJson(text)


def _decode_long_integers(data: bytes, exc: Exception) -> Any:
    """`data`, which holds an integer too long for msgspec, parsed by the standard library's
    parser (C; about 4x slower, and a store with such an integer is rare), held to the same
    rules: strict UTF-8, no lone surrogate escapes, no NaN/Infinity, no number beyond the double
    range. Everything else it already refuses as msgspec does (control characters in strings,
    leading zeros, anything after the value); integers come back exactly, floats as the same
    correctly rounded doubles."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _diagnose(data, exc) from None
    if _lone_surrogate(data):
        raise _diagnose(data, exc)
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as bad:
        raise JsonError(bad.msg.removesuffix(" at"), len(text[: bad.pos].encode())) from None
    except _NotJson as bad:
        if str(bad)[-1:].isdigit():  # a float beyond the double range
            raise _diagnose(data, exc) from None
        raise JsonError("NaN or Infinity, which JSON does not allow") from None
    except RecursionError:
        raise JsonError("nesting too deep to parse") from None


def _lone_surrogate(data: bytes) -> re.Match[bytes] | None:
    """The first lone surrogate escape; the scan (about 0.16 s/MB) starts at the first `\\u`."""
    start = data.find(b"\\u")
    if start < 0:
        return None
    while start and data[start - 1] == 0x5C:  # the whole run of backslashes: their parity matters
        start -= 1
    return _LONE_SURROGATE.search(data, start)


def _diagnose(data: bytes, exc: Exception) -> JsonError:
    """Turn a parser failure into a precise reason and position (only runs on failure). The
    reason quotes nothing from the data (no byte value, escape or number: stores hold secrets);
    the position tells where to look."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return JsonError("invalid UTF-8", bad.start)
    surrogate = _lone_surrogate(data)
    if surrogate is not None:
        return JsonError("a lone surrogate escape (not valid Unicode)", surrogate.end() - 6)
    message = str(exc)
    if "out of range" in message:
        for number in _NUMBER.finditer(data):
            if float(number.group(0)) in (float("inf"), float("-inf")):
                return JsonError("a number is outside the range of a double", number.start())
        return JsonError("a number is outside the range of a double")
    if "recursion" in message:
        return JsonError("nesting too deep to parse")
    if "truncated" in message:
        return JsonError("unexpected end of file (truncated JSON)", len(data))
    found = _BYTE_POS.search(message)
    reason = decoder_message(_BYTE_POS.sub("", message).strip()).removeprefix("JSON is malformed: ")
    return JsonError(reason, int(found.group(1)) if found else None)


def encode(value: Any) -> bytes:
    """The canonical bytes of `value`."""
    return indent(encode_compact(value))


def encode_compact(value: Any) -> bytes:
    """`value` as compact JSON with keys sorted by code point (the canonical form before layout)."""
    return _encoder.encode(value)


def indent(data: bytes) -> bytes:
    """Valid JSON bytes laid out one member per line with two-space indentation, key order kept.
    Applied to `encode_compact` output this gives the canonical bytes."""
    return msgspec.json.format(data, indent=2)


def nesting_too_deep(canonical: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether canonical bytes hold a container `limit` or more levels deep (root = level 1).

    In canonical form a container at level L starts on a line indented 2*(L-1) spaces and its
    members sit at 2*L. So only lines indented at least 2*(limit-1) need a look, and finding them
    is a single C-speed substring search instead of a walk over every value.
    """
    indent = b"\n" + b" " * (2 * (limit - 1))
    start = canonical.find(indent)
    while start != -1:
        line_start = start + len(indent)
        line_end = canonical.find(b"\n", line_start)
        line = canonical[line_start : len(canonical) if line_end == -1 else line_end]
        if line[:1] in (b" ", b"{", b"[") or _member_value(line)[:1] in (b"{", b"["):
            return True
        start = canonical.find(indent, line_start)
    return False


def _member_value(line: bytes) -> bytes:
    """The value part of a canonical `"key": value` line (or the line itself for array items)."""
    if not line.startswith(b'"'):
        return line
    i = 1
    while i < len(line):
        if line[i] == 0x5C:  # backslash: skip the escaped character
            i += 2
            continue
        if line[i] == 0x22:  # closing quote of the key
            return line[i + 1 :].removeprefix(b": ")
        i += 1
    return b""


PIECE_BYTES = 1 << 21
"""About how big a piece of CanonicalPieces is: small enough that its buffers are reused from the
heap instead of being mapped afresh (and page-faulted) for every piece."""


class CanonicalPieces:
    """The canonical bytes of a store's top-level object (a dict), in pieces of a few megabytes.

    `b"".join(CanonicalPieces(value))` equals `encode(value)` for a dict of plain values or of
    exact structs (structs.py). Each top-level member is laid out on its own and a big
    container `batch` members at a time: the batch is encoded under its top-level key, as
    `{key: {members}}`, so msgspec lays out the members at their real depth, and the lines
    between the wrapper's first two and last two are the members' lines. Pieces reuse the same
    few megabytes of memory instead of two buffers the size of the store, and the caller can hash
    and write one piece while the next is made (a 240 MB codex store: 0.9 s to lay out, hash and
    write, against 1.3 s to encode and lay out in one go and 0.7 s to hash and write after).

    `too_deep` tells, once every piece was taken, whether the nesting rule
    (`nesting_too_deep`) is broken anywhere, and `colons` how many `:` the pieces hold (counted on
    the compact text each piece is laid out from, while it is fresh in the cache: the layout only
    adds whitespace), which duplicates.py compares with the input's.
    """

    def __init__(self, value: dict[str, Any], batch: int | None = None) -> None:
        self.value = value
        self.batch = batch
        """Members per piece; None: as many as make about PIECE_BYTES, learnt as pieces are made."""
        self.too_deep = False
        self.colons = 0

    def _laid_out(self, wrapper: dict[str, Any], not_yielded: int = 0) -> bytes:
        """The canonical text of `wrapper`; `not_yielded`: colons of it the caller does not yield."""
        compact = _typed_encoder.encode(wrapper)
        self.colons += compact.count(b":") - not_yielded
        text = msgspec.json.format(compact, indent=2)
        self.too_deep = self.too_deep or nesting_too_deep(text)
        return text

    def __iter__(self) -> Iterator[bytes | memoryview]:
        keys = sorted(self.value)
        if not keys:
            yield b"{}"
            return
        yield b"{\n"
        for index, key in enumerate(keys):
            held = self.value[key]
            if index:
                yield b",\n"
            if isinstance(held, (dict, list)) and len(held) > (self.batch or 1):
                yield from self._container(key, held)
            else:  # `{\n  "key": value\n}` without its first and last two bytes
                yield memoryview(self._laid_out({key: held}))[2:-2]
        yield b"\n}"

    def _container(self, key: str, held: dict[str, Any] | list[Any]) -> Iterator[bytes | memoryview]:
        opening, closing = (b"{", b"}") if isinstance(held, dict) else (b"[", b"]")
        key_colons = 1 + key.count(":")  # `"key": ` (a string's `:` is never escaped)
        self.colons += key_colons
        yield b"  " + _typed_encoder.encode(key) + b": " + opening + b"\n"
        members = sorted(held) if isinstance(held, dict) else None
        start, count = 0, self.batch or 16
        while start < len(held):
            if isinstance(held, dict):
                assert members is not None
                part: Any = {k: held[k] for k in members[start : start + count]}
            else:
                part = held[start : start + count]
            # `{\n  "key": {\n` + the members' lines + `\n  }\n}`; the key has no raw newline
            text = self._laid_out({key: part}, not_yielded=key_colons)
            if start:
                yield b",\n"
            yield memoryview(text)[text.index(b"\n", 2) + 1 : -6]
            start += count
            if self.batch is None:
                count = max(1, min(count * 4, count * PIECE_BYTES // len(text)))
        yield b"\n  " + closing
