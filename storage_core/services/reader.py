"""Reading a file's bytes: a reader that verifies every block and fails over to the next copy per block."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from storage_core.errors import CorruptPiece, PieceMissing, StorageUnavailable
from storage_core.integrity import BLOCK_HASHES, DIGEST_SIZE
from storage_core.layout import FileLayout, block_span, global_block_index, split_range
from storage_core.metrics import BYTES_SERVED, FAILOVERS
from storage_core.services.sources import Source

log = logging.getLogger(__name__)


# (the copy, the piece, what went wrong)
FailureHook = Callable[[Source, int, StorageUnavailable], None]


class VerifiedReader:
    """Streams byte ranges of one file, block by block, each block checked against its recorded digest.

    A block that cannot be read from a copy, or does not match, is read from the next copy; a copy
    that is unreachable is not asked again during this read, and a piece known to be damaged on a copy
    (``Source.damaged``) is not asked of that copy. Memory is bounded by one block.
    """

    def __init__(self, layout: FileLayout, sources: list[Source], on_failure: FailureHook | None = None,
                 verify: bool = True):
        self.layout = layout
        self.sources = sources
        self.on_failure = on_failure
        self.verify = verify
        self._hash = BLOCK_HASHES[layout.block_hash]
        self._served = [BYTES_SERVED.labels(source.location) for source in sources]
        self._dead: set[int] = set()
        self._bad_pieces = {(position, piece) for position, source in enumerate(sources) for piece in source.damaged}

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        layout = self.layout
        for piece in split_range(start, end, layout.piece_size):
            piece_len = layout.piece_length(piece.index)
            want_lo, want_hi = piece.offset, piece.offset + piece.length
            for number, block_start, block_len in block_span(
                piece.index, piece.offset, piece.length, piece_len, layout.block_size
            ):
                data = self.read_block(piece.index, number, block_start, block_len)
                lo = max(want_lo, block_start) - block_start
                hi = min(want_hi, block_start + block_len) - block_start
                yield data if (lo == 0 and hi == block_len) else data[lo:hi]

    def read_block(self, piece: int, number: int, block_start: int, block_len: int) -> bytes:
        layout = self.layout
        index = global_block_index(piece, number, layout.piece_size, layout.block_size)
        expected = layout.block_digests[index * DIGEST_SIZE:(index + 1) * DIGEST_SIZE]
        errors = []
        for position, source in enumerate(self.sources):
            if position in self._dead or (position, piece) in self._bad_pieces:
                continue
            try:
                data = b"".join(source.plugin.read_piece(layout.checksum, piece, block_start, block_len))
                if len(data) != block_len:
                    raise PieceMissing(f"piece {piece} is shorter than recorded on {source.location}")
                if self.verify and self._hash(data).digest() != expected:
                    raise CorruptPiece(f"piece {piece} block {number} failed verification on {source.location}")
                self._served[position].inc(block_len)
                return data
            except StorageUnavailable as exc:
                if isinstance(exc, PieceMissing | CorruptPiece):
                    self._bad_pieces.add((position, piece))
                else:
                    self._dead.add(position)
                errors.append(f"{source.location}: {exc.detail}")
                FAILOVERS.labels(source.location, exc.code).inc()
                log.warning("copy of %s on %s failed: %s", layout.checksum, source.location, exc.detail)
                if self.on_failure is not None:
                    self.on_failure(source, piece, exc)
        raise StorageUnavailable(
            f"no copy of {layout.checksum} can serve piece {piece}"
            + (f" ({'; '.join(errors)})" if errors else " (no servable copy)")
        )



def servable(layout: FileLayout, sources: list[Source], ranges: list[tuple[int, int]]) -> bool:
    """Whether every piece the ranges touch has a copy not known to be damaged there: when not, a read
    could only fail, so HEAD and GET say 503 before anything is charged."""
    if not sources:
        return False
    if not any(source.damaged for source in sources):
        return True  # the common case costs nothing
    damaged_everywhere = frozenset.intersection(*(source.damaged for source in sources))
    return not any(piece.index in damaged_everywhere
                   for start, end in ranges for piece in split_range(start, end, layout.piece_size))
