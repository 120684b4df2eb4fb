"""Reading a file's bytes: a reader that verifies every block and fails over to the next copy per block."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from storage_core.errors import CorruptPiece, PieceMissing, StorageUnavailable
from storage_core.integrity import BLOCK_HASHES, DIGEST_SIZE
from storage_core.layout import FileLayout, block_span, global_block_index, split_range
from storage_core.metrics import BYTES_SERVED, FAILOVERS
from storage_core.plugin import PieceFile
from storage_core.services.sources import Source

log = logging.getLogger(__name__)


# (the copy, the piece, what went wrong)
FailureHook = Callable[[Source, int, StorageUnavailable], None]

# What a download holds while its client takes the bytes: a verified block bigger than this is handed on
# whole while the process's budget of whole blocks allows (few downloads: one copy, one send per block),
# else in chunks of this size read again from the open piece file (1,500 slow clients holding 1 MiB
# blocks would be 1.5 GiB of worker memory; in chunks, about 100 MiB).
SEND_CHUNK = 64 * 1024
WHOLE_BLOCKS_BUDGET = 16 * 1024 * 1024


class Budget:
    """Bytes of whole blocks being handed on at once in this process (shared by its threads or greenlets)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size


WHOLE_BLOCKS = Budget(WHOLE_BLOCKS_BUDGET)


class VerifiedReader:
    """Streams byte ranges of one file, block by block, each block checked against its recorded digest.

    A block that cannot be read from a copy, or does not match, is read from the next copy; a copy
    that is unreachable is not asked again during this read, and a piece known to be damaged on a copy
    (``Source.damaged``) is not asked of that copy. Memory is bounded by one block, and for a client that
    reads slowly by one SEND_CHUNK when the copy can be read again from its open file (``_sliced``).
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
        # (source position, piece) -> the piece held open while its blocks are sent in chunks (see _sliced)
        self._files: dict[tuple[int, int], PieceFile | None] = {}

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        layout = self.layout
        try:
            for piece in split_range(start, end, layout.piece_size):
                piece_len = layout.piece_length(piece.index)
                want_lo, want_hi = piece.offset, piece.offset + piece.length
                for number, block_start, block_len in block_span(
                    piece.index, piece.offset, piece.length, piece_len, layout.block_size
                ):
                    lo = max(want_lo, block_start) - block_start
                    hi = min(want_hi, block_start + block_len) - block_start
                    if hi - lo <= SEND_CHUNK:
                        data = self.read_block(piece.index, number, block_start, block_len)
                        yield data if (lo == 0 and hi == block_len) else data[lo:hi]
                    elif WHOLE_BLOCKS.take(block_len):
                        try:
                            data = self.read_block(piece.index, number, block_start, block_len)
                            yield data if (lo == 0 and hi == block_len) else data[lo:hi]
                        finally:
                            data = b""
                            WHOLE_BLOCKS.give(block_len)
                    else:
                        yield from self._sliced(piece.index, number, block_start, block_len, lo, hi)
                self._close_files()
        finally:
            self._close_files()

    def _sliced(self, piece: int, number: int, block_start: int, block_len: int, lo: int, hi: int
                ) -> Iterator[bytes]:
        """Bytes ``lo:hi`` of a verified block in chunks of SEND_CHUNK read again from the file that was
        verified (the page cache), so that a client that reads slowly keeps one chunk in memory, not the
        block. A copy that cannot be read again this way (``open_piece`` is None) sends the block whole."""
        data, file = self._read_block(piece, number, block_start, block_len, reopen=True)
        if file is None:
            yield data if (lo == 0 and hi == block_len) else data[lo:hi]
            return
        for offset in range(lo, hi, SEND_CHUNK):
            length = min(SEND_CHUNK, hi - offset)
            try:
                chunk = file.read(block_start + offset, length)
            except StorageUnavailable as exc:  # verified a moment ago: read the rest from any good copy
                log.warning("copy of %s failed while being sent: %s", self.layout.checksum, exc.detail)
                rest = self.read_block(piece, number, block_start, block_len)
                yield rest[offset:hi]
                return
            yield chunk

    def _file(self, position: int, source: Source, piece: int) -> PieceFile | None:
        key = (position, piece)
        if key not in self._files:
            self._files[key] = source.plugin.open_piece(self.layout.checksum, piece)
        return self._files[key]

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        for file in files.values():
            if file is not None:
                file.close()

    def _digest(self, file: PieceFile, block_start: int, block_len: int) -> bytes:
        digest = self._hash()
        for offset in range(block_start, block_start + block_len, SEND_CHUNK):
            digest.update(file.read(offset, min(SEND_CHUNK, block_start + block_len - offset)))
        return digest.digest()

    def read_block(self, piece: int, number: int, block_start: int, block_len: int) -> bytes:
        return self._read_block(piece, number, block_start, block_len)[0]

    def _read_block(self, piece: int, number: int, block_start: int, block_len: int, reopen: bool = False
                    ) -> tuple[bytes, PieceFile | None]:
        """The verified block, from the first copy that has it good; with ``reopen``, verified through the
        copy's open file (``open_piece``) when it has one, which is returned instead of the bytes (``b""``)."""
        layout = self.layout
        index = global_block_index(piece, number, layout.piece_size, layout.block_size)
        expected = layout.block_digests[index * DIGEST_SIZE:(index + 1) * DIGEST_SIZE]
        errors = []
        for position, source in enumerate(self.sources):
            if position in self._dead or (position, piece) in self._bad_pieces:
                continue
            try:
                file = self._file(position, source, piece) if reopen else None
                if file is not None:
                    # the caller sends from the file: the block is only hashed here, a send chunk at a time
                    # (a 1 MiB buffer per block would be mapped and faulted in afresh each time)
                    if self.verify and self._digest(file, block_start, block_len) != expected:
                        raise CorruptPiece(f"piece {piece} block {number} failed verification on {source.location}")
                    self._served[position].inc(block_len)
                    return b"", file
                data = b"".join(source.plugin.read_piece(layout.checksum, piece, block_start, block_len))
                if len(data) != block_len:
                    raise PieceMissing(f"piece {piece} is shorter than recorded on {source.location}")
                if self.verify and self._hash(data).digest() != expected:
                    raise CorruptPiece(f"piece {piece} block {number} failed verification on {source.location}")
                self._served[position].inc(block_len)
                return data, file
            except StorageUnavailable as exc:
                file = self._files.pop((position, piece), None)
                if file is not None:
                    file.close()
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
