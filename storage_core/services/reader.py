"""Reading a file's bytes: a reader that verifies every block and fails over to the next copy per block."""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from storage_core.errors import CorruptPiece, PieceMissing, StorageUnavailable
from storage_core.integrity import BLOCK_HASHES, DIGEST_SIZE
from storage_core.layout import FileLayout, block_span, global_block_index, split_range
from storage_core.metrics import BYTES_SERVED, FAILOVERS
from storage_core.plugin import READ_CHUNK
from storage_core.services.sources import Source

log = logging.getLogger(__name__)

# bytes of consecutive blocks read (and then verified block by block) in one plugin call; bounds the
# memory of a stream like a block did
WINDOW = READ_CHUNK


# one system call sets up the window's page tables, instead of a page fault per few pages as it is hashed
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

# (the copy, the piece, what went wrong)
FailureHook = Callable[[Source, int, StorageUnavailable], None]


@dataclass(frozen=True, slots=True)
class FileSpan:
    """Verified bytes still in their piece file: ``length`` bytes at ``offset`` of the open ``fd``. Valid
    only until the iterator that yielded it moves on (it closes the file after the piece)."""

    fd: int
    offset: int
    length: int

    def read(self) -> bytes:
        return os.pread(self.fd, self.length, self.offset)


class _OpenPiece:
    """One piece of one copy, open: each window is mapped read-only, hashed where it lies in the page cache
    (no copy into Python) and unmapped before the socket is given the file itself (sendfile). Mapping a
    window rather than the piece keeps a download's memory bounded by a window."""

    def __init__(self, position: int, source: Source, fd: int):
        self.position, self.source, self.fd = position, source, fd

    def window(self, start: int, length: int) -> tuple[mmap.mmap, memoryview]:
        """The mapping of ``[start, start + length)`` (from the page boundary below) and a view of exactly that."""
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(self.fd, start + length - aligned, mmap.MAP_SHARED | _POPULATE, mmap.PROT_READ,
                           offset=aligned)
        return mapped, memoryview(mapped)[start - aligned:]

    def close(self) -> None:
        os.close(self.fd)


class VerifiedReader:
    """Streams byte ranges of one file, block by block, each block checked against its recorded digest.

    A block that cannot be read from a copy, or does not match, is read from the next copy; a copy
    that is unreachable is not asked again during this read, and a piece known to be damaged on a copy
    (``Source.damaged``) is not asked of that copy. Memory is bounded by one window (``WINDOW``, or a block
    if larger).
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
        # set by a body whose door can hand files to the socket (ChargedBody.attach): see iter_range
        self.spans = False

    def iter_range(self, start: int, end: int) -> Iterator[bytes | FileSpan]:
        """The bytes of ``[start, end)``, verified. With ``spans`` set (a door that can sendfile), windows
        of a copy whose plugin opens pieces as files come as ``FileSpan``s instead of bytes."""
        layout = self.layout
        per_window = max(1, WINDOW // layout.block_size)
        # a long read starts with one block: a download reads its first chunk before it answers and holds it
        # until the client has taken it, so 1,500 slow clients starting at once hold a block each, not a window
        step = 1 if end - start > WINDOW else per_window
        for piece in split_range(start, end, layout.piece_size):
            piece_len = layout.piece_length(piece.index)
            want_lo, want_hi = piece.offset, piece.offset + piece.length
            blocks = block_span(piece.index, piece.offset, piece.length, piece_len, layout.block_size)
            opened: _OpenPiece | None = None
            mappable = True
            try:
                # consecutive blocks are read in one plugin call (a window of about WINDOW bytes) and
                # verified one by one: small blocks cost a hash each, not an open and a read each
                i = 0
                while i < len(blocks):
                    group = blocks[i:i + step]
                    i, step = i + step, per_window
                    window_start = group[0][1]
                    window_len = group[-1][1] + group[-1][2] - window_start
                    lo = max(want_lo, window_start) - window_start
                    hi = min(want_hi, window_start + window_len) - window_start
                    if self.spans and mappable:
                        if opened is None:
                            opened = self._map(piece.index, piece_len)
                            mappable = opened is not None
                        if opened is not None:
                            if self._verified_in_place(opened, piece.index, group[0][0], window_start, window_len):
                                yield FileSpan(opened.fd, window_start + lo, hi - lo)
                                continue
                            opened.close()  # that copy's piece is bad: the rest of it comes by read_blocks
                            opened, mappable = None, False
                    data = self.read_blocks(piece.index, group[0][0], window_start, window_len)
                    yield data if (lo == 0 and hi == window_len) else data[lo:hi]
            finally:
                if opened is not None:
                    opened.close()

    def _map(self, piece: int, piece_len: int) -> _OpenPiece | None:
        """The piece of the first copy that may serve it, open; None when that copy cannot open pieces as
        files or the attempt fails (``read_blocks`` then reads, and meets any fault, as without spans)."""
        for position, source in enumerate(self.sources):
            if position in self._dead or (position, piece) in self._bad_pieces:
                continue
            if not source.plugin.can_open_pieces:
                return None
            try:
                fd = source.plugin.open_piece(self.layout.checksum, piece)
            except StorageUnavailable:
                return None
            try:
                # shorter than recorded: mapping it would fault past its end; read_blocks says PieceMissing
                if os.fstat(fd).st_size < piece_len:
                    os.close(fd)
                    return None
                return _OpenPiece(position, source, fd)
            except OSError:
                os.close(fd)
                return None
        return None

    def _verified_in_place(self, opened: _OpenPiece, piece: int, first: int, start: int, length: int) -> bool:
        position, source = opened.position, opened.source
        if self.verify:
            try:
                mapped, view = opened.window(start, length)
            except (OSError, ValueError):
                return False  # read_blocks reads it, and meets the fault if there is one
            try:
                self._check(view, piece, first, source)
            except CorruptPiece as exc:
                self._failed(position, source, piece, exc)
                return False
            finally:
                view.release()
                mapped.close()
        self._served[position].inc(length)
        return True

    def _failed(self, position: int, source: Source, piece: int, exc: StorageUnavailable) -> None:
        if isinstance(exc, PieceMissing | CorruptPiece):
            self._bad_pieces.add((position, piece))
        else:
            self._dead.add(position)
        FAILOVERS.labels(source.location, exc.code).inc()
        log.warning("copy of %s on %s failed: %s", self.layout.checksum, source.location, exc.detail)
        if self.on_failure is not None:
            self.on_failure(source, piece, exc)

    def read_blocks(self, piece: int, first: int, start: int, length: int) -> bytes:
        """``length`` bytes at ``start`` of a piece, whole blocks from block ``first`` on, each verified;
        from the first copy that has them all good."""
        layout = self.layout
        errors = []
        for position, source in enumerate(self.sources):
            if position in self._dead or (position, piece) in self._bad_pieces:
                continue
            try:
                data = b"".join(source.plugin.read_piece(layout.checksum, piece, start, length))
                if len(data) != length:
                    raise PieceMissing(f"piece {piece} is shorter than recorded on {source.location}")
                if self.verify:
                    self._check(data, piece, first, source)
                self._served[position].inc(length)
                return data
            except StorageUnavailable as exc:
                errors.append(f"{source.location}: {exc.detail}")
                self._failed(position, source, piece, exc)
        raise StorageUnavailable(
            f"no copy of {layout.checksum} can serve piece {piece}"
            + (f" ({'; '.join(errors)})" if errors else " (no servable copy)")
        )

    def _check(self, data: bytes | memoryview, piece: int, first: int, source: Source) -> None:
        """``CorruptPiece`` unless every block in ``data`` (block ``first`` of ``piece`` on) matches its digest."""
        layout = self.layout
        size, digests, new_hash = layout.block_size, layout.block_digests, self._hash
        index = global_block_index(piece, first, layout.piece_size, size) * DIGEST_SIZE
        view = memoryview(data)
        for offset in range(0, len(view), size):
            if new_hash(view[offset:offset + size]).digest() != digests[index:index + DIGEST_SIZE]:
                raise CorruptPiece(f"piece {piece} block {first + offset // size} failed verification on "
                                   f"{source.location}")
            index += DIGEST_SIZE


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
