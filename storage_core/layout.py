"""How a file is laid out: pieces of a fixed size, each cut into integrity blocks, and the maps between them.

Piece ``i`` covers ``[i*piece_size, min((i+1)*piece_size, size))``; block ``k`` of a piece covers
``[k*block_size, min((k+1)*block_size, piece length))`` of that piece, so a block never crosses a piece.
Every piece count, piece length and block index in the service comes from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def piece_count(size: int, piece_size: int) -> int:
    """Number of pieces of a file of ``size`` bytes (0 for an empty file)."""
    if piece_size <= 0:
        raise ValueError(f"piece_size must be > 0, got {piece_size}")
    return -(-size // piece_size)


def piece_length(size: int, piece_size: int, index: int) -> int:
    """Length of piece ``index`` (the last piece may be short)."""
    return min(piece_size, size - index * piece_size)


@dataclass(frozen=True, slots=True)
class FileLayout:
    """What a reader needs to know of a file; detached from any database session."""

    checksum: str
    size: int
    piece_size: int
    block_size: int
    block_digests: bytes
    block_hash: str  # the name in storage_core.integrity.BLOCK_HASHES the digests were made with

    @classmethod
    def of(cls, file: Any) -> FileLayout:
        """The layout of a ``models.File``, or of a result row with the same columns."""
        return cls(file.checksum, file.size, file.piece_size, file.block_size, bytes(file.block_digests),
                   file.block_hash)

    @property
    def piece_count(self) -> int:
        return piece_count(self.size, self.piece_size)

    def piece_length(self, index: int) -> int:
        return piece_length(self.size, self.piece_size, index)

    def pieces(self) -> Iterator[tuple[int, int, int]]:
        """``(index, start, length)`` of every piece, in order."""
        for index in range(self.piece_count):
            yield index, index * self.piece_size, self.piece_length(index)


@dataclass(frozen=True, slots=True)
class PieceRange:
    """The part of one piece a byte range touches: ``length`` bytes at ``offset`` within piece ``index``."""

    index: int
    offset: int
    length: int


def split_range(start: int, end: int, piece_size: int) -> list[PieceRange]:
    """Map the file byte range ``[start, end)`` onto the fixed-size pieces it touches, in order."""
    if piece_size <= 0:
        raise ValueError(f"piece_size must be > 0, got {piece_size}")
    if start < 0 or end < 0 or start > end:
        raise ValueError(f"invalid range [{start}, {end})")
    pieces: list[PieceRange] = []
    pos = start
    while pos < end:
        index, offset = divmod(pos, piece_size)
        length = min(piece_size - offset, end - pos)
        pieces.append(PieceRange(index, offset, length))
        pos += length
    return pieces


def blocks_per_piece(piece_size: int, block_size: int) -> int:
    """Number of integrity blocks in a full piece (the last block may be short)."""
    if piece_size <= 0 or block_size <= 0:
        raise ValueError(f"piece_size and block_size must be > 0, got {piece_size}, {block_size}")
    return -(-piece_size // block_size)


def global_block_index(piece_index: int, block_number: int, piece_size: int, block_size: int) -> int:
    """File-wide number of a block, with every piece reserving ``blocks_per_piece`` slots."""
    per_piece = blocks_per_piece(piece_size, block_size)
    if piece_index < 0 or not 0 <= block_number < per_piece:
        raise ValueError(f"invalid block ({piece_index}, {block_number}) with {per_piece} blocks per piece")
    # Fixed stride even for the short last piece, so an index never depends on the file size.
    return piece_index * per_piece + block_number


def block_span(
    piece_index: int, offset: int, length: int, piece_len: int, block_size: int
) -> list[tuple[int, int, int]]:
    """Blocks covering a read of ``length`` bytes at ``offset`` in a piece of ``piece_len`` bytes.

    Each is ``(block_number, block_start, block_len)`` within the piece; block ``k`` spans
    ``[k*block_size, min((k+1)*block_size, piece_len))``, so a block never crosses the piece end.
    ``piece_index`` is only validated: block coordinates are piece-relative (see global_block_index).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    if piece_index < 0 or piece_len < 0 or offset < 0 or length < 0 or offset + length > piece_len:
        raise ValueError(
            f"read of {length} bytes at {offset} does not fit piece {piece_index} of {piece_len} bytes"
        )
    if length == 0:
        return []
    first = offset // block_size
    last = (offset + length - 1) // block_size
    return [
        (k, k * block_size, min((k + 1) * block_size, piece_len) - k * block_size)
        for k in range(first, last + 1)
    ]
