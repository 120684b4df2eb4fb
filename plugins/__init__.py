"""Storage location plugins (local filesystem, MinIO/S3) and the piece-address checks they share."""

from __future__ import annotations

from typing import BinaryIO

from storage_core.errors import StorageUnavailable
from storage_core.names import is_checksum


def check_piece_address(checksum: str, index: int) -> None:
    """Raise ``ValueError`` unless ``checksum`` is a lower-case sha256 hex digest and ``index`` >= 0.

    Every plugin calls this before it builds a path or an object name, so no caller-supplied text
    ever reaches the filesystem or the bucket unchecked (no ``..``, no ``/``, no NUL).
    """
    # bool is an int subclass; a True index is a caller bug, not piece 1
    if not is_checksum(checksum):
        raise ValueError(f"invalid piece checksum {checksum!r}: expected 64 lower-case hex characters")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"invalid piece index {index!r}: expected an int >= 0")


def check_byte_range(offset: int, length: int) -> None:
    """Raise ``ValueError`` unless ``offset`` and ``length`` are ints >= 0."""
    for name, value in (("offset", offset), ("length", length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"invalid {name} {value!r}: expected an int >= 0")


def parse_piece_name(name: str) -> tuple[str, int] | None:
    """``(checksum, index)`` from a ``<checksum>.<index>`` file or object name, else None."""
    checksum, dot, index = name.partition(".")
    # isdecimal() is False for "", "+1" and "-1"; the round trip rejects "01" so that one piece
    # has exactly one name
    if not dot or not index.isdecimal() or str(int(index)) != index:
        return None
    if not is_checksum(checksum):
        return None
    return checksum, int(index)


class ExactReader:
    """A file-like view yielding exactly ``length`` bytes of ``source``.

    A source that ends early raises ``StorageUnavailable`` (the piece would be incomplete); bytes
    past ``length`` are never read. Whatever the source itself raises propagates unchanged and is
    kept in ``source_error``, so a plugin can tell a failing upload stream from a failing location.
    """

    def __init__(self, source: BinaryIO, length: int):
        self._source = source
        self._length = length
        self.remaining = length
        self.source_error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        want = self.remaining if size is None or size < 0 else min(size, self.remaining)
        # fill the request completely: minio concatenates short reads with bytes +=, which is
        # quadratic for a 16 MiB part read from a socket in small pieces
        buf = bytearray()
        while len(buf) < want:
            try:
                chunk = self._source.read(want - len(buf))
            except BaseException as exc:
                self.source_error = exc
                raise
            if not chunk:
                got = self._length - self.remaining + len(buf)
                raise StorageUnavailable(f"upload stream ended after {got} of {self._length} bytes")
            if len(chunk) > want - len(buf):
                raise ValueError("upload stream returned more bytes than requested")
            buf += chunk
        self.remaining -= len(buf)
        return bytes(buf)
