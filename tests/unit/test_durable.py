"""durable.write_temp_stream: pieces hashed and written by a second thread, nothing left behind."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from store_migrate.fs import durable

PIECES = [b"{\n", memoryview(b'  "a": 1'), b"\n}"]
WHOLE = b'{\n  "a": 1\n}'


def test_pieces_are_written_whole_with_their_hash_and_mode(tmp_path: Path) -> None:
    digest = hashlib.sha256()
    temp, size = durable.write_temp_stream(str(tmp_path), "store.json", PIECES, 0o640, None, digest)
    assert temp is not None and Path(temp).read_bytes() == WHOLE and size == len(WHOLE)
    assert digest.hexdigest() == hashlib.sha256(WHOLE).hexdigest()
    assert os.stat(temp).st_mode & 0o777 == 0o640 and durable.TEMP_MARK in temp


def test_bytes_the_target_already_holds_leave_no_file(tmp_path: Path) -> None:
    same = hashlib.sha256(WHOLE).hexdigest()
    temp, size = durable.write_temp_stream(str(tmp_path), "store.json", PIECES, 0o600, None, hashlib.sha256(), same)
    assert temp is None and size == len(WHOLE) and list(tmp_path.iterdir()) == []


def test_a_failing_maker_or_writer_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Iterator[bytes]:
        yield b"{"
        raise RuntimeError("maker broke")

    with pytest.raises(RuntimeError, match="maker broke"):
        durable.write_temp_stream(str(tmp_path), "store.json", broken(), 0o600, None, hashlib.sha256())
    assert list(tmp_path.iterdir()) == []

    def no_space(fd: int, data: bytes | memoryview) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable, "write_all", no_space)
    many = [b"x" * 1000] * 50  # more pieces than the hand-off queue holds: the maker must not block
    with pytest.raises(OSError, match="No space"):
        durable.write_temp_stream(str(tmp_path), "store.json", many, 0o600, None, hashlib.sha256())
    assert list(tmp_path.iterdir()) == []
