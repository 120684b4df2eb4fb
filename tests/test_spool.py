"""The spool on its own: rounds hashed and written on threads, O_DIRECT piece files, link once, kernel copy."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import threading
from pathlib import Path

import blake3
import pytest

from storage_core.spool import CHUNK, Spool

KiB = 1024
PIECE = 3 * 1000 * 1000 + 1  # not a multiple of O_DIRECT's alignment: unaligned tails inside the body


class Jagged(io.RawIOBase):
    """A stream returning short reads of random sizes (as a socket does); ``readinto`` or ``read`` only."""

    def __init__(self, data: bytes, readinto: bool):
        self._data = io.BytesIO(data)
        self._random = random.Random(len(data))
        self.zero_copy = readinto  # read into the spool's buffers, as storage_core.wsgi_body's body is

    def read(self, size: int = -1) -> bytes:
        return self._data.read(self._random.randint(1, size) if size and size > 0 else size)

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class ReadOnly:
    def __init__(self, stream: Jagged):
        self.read = stream.read


def iter_fd(fd: int):
    while chunk := os.read(fd, 1 << 16):
        yield chunk


def expected_blocks(data: bytes, piece: int, block: int) -> bytes:
    return b"".join(blake3.blake3(data[start + i:min(start + i + block, start + piece, len(data))]).digest()
                    for start in range(0, len(data), piece) for i in range(0, min(piece, len(data) - start), block))


@pytest.mark.parametrize("readinto", [True, False], ids=["readinto", "read"])
@pytest.mark.parametrize("size", [0, 1, 4095, 4097, PIECE, 2 * PIECE + 4096 + 3, CHUNK + 1])
def test_pieces_and_digests_are_right_whatever_the_reads(tmp_path, size, readinto):
    data = os.urandom(size)
    stream = Jagged(data, readinto)
    with Spool(tmp_path / "spool", PIECE, 256 * KiB) as spool:
        spool.receive(stream if readinto else ReadOnly(stream), size if size % 2 else None, 0)
        assert spool.size == size
        assert spool.sha256 == hashlib.sha256(data).hexdigest()
        assert spool.md5 == hashlib.md5(data).hexdigest()
        assert spool.block_digests == expected_blocks(data, PIECE, 256 * KiB)
        pieces = []
        for index in range(spool.piece_count):
            with spool.piece_reader(index) as piece:
                pieces.append(piece.read())
        assert b"".join(pieces) == data
        assert [len(p) for p in pieces] == [spool.piece_length(i) for i in range(spool.piece_count)]
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_piece_is_linked_once_then_copied_and_copied_through_a_buffer_where_the_kernel_cannot(tmp_path):
    data = os.urandom(PIECE + 10)
    with Spool(tmp_path / "spool", PIECE, 256 * KiB) as spool:
        spool.receive(io.BytesIO(data), len(data), 0)
        with spool.piece_reader(0) as piece:
            assert piece.link_to(str(tmp_path / "first"))
        with spool.piece_reader(0) as piece:
            assert not piece.link_to(str(tmp_path / "second"))  # the same inode twice is not two copies
            fd = os.open(tmp_path / "second", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                assert piece.copy_to(fd) == PIECE
            finally:
                os.close(fd)
        with spool.piece_reader(0) as piece:
            read, write = os.pipe()  # copy_file_range refuses a pipe: the way through a buffer
            received: list[bytes] = []
            reader = threading.Thread(target=lambda: received.extend(iter_fd(read)))
            reader.start()
            try:
                head = piece.read(100)
                assert piece.copy_to(write) == PIECE - 100
            finally:
                os.close(write)
                reader.join(30)
                os.close(read)
            assert head + b"".join(received) == data[:PIECE]
    assert (tmp_path / "first").read_bytes() == (tmp_path / "second").read_bytes() == data[:PIECE]
    assert os.stat(tmp_path / "first").st_nlink == 1  # the spool's name is gone


def test_a_filesystem_refusing_o_direct_gets_buffered_writes(tmp_path, monkeypatch):
    """A fault this machine's filesystems cannot produce (ext4 and tmpfs both take O_DIRECT): ``open``
    refusing it with EINVAL, as some filesystems do."""
    real_open = os.open
    refused = []

    def open_without_direct(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_without_direct)
    data = os.urandom(2 * PIECE + 5)
    with Spool(tmp_path / "spool", PIECE, 256 * KiB) as spool:
        spool.receive(io.BytesIO(data), len(data), 0)
        assert refused, "the spool never asked for O_DIRECT"
        assert spool.sha256 == hashlib.sha256(data).hexdigest()
        assert b"".join(Path(p).read_bytes() for p in spool.paths) == data
