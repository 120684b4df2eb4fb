"""Upload spooling: the body goes to a temporary file while its digests and block checksums are computed.

The body is read in rounds of ``CHUNK`` bytes. Each round's bytes go, as the one bytes object the
request stream returned (no copy), to three calls on real threads (``storage_core.offload``): md5;
sha256 and the BLAKE3 block digests; ``pwrite`` into the spool file. They run in parallel with each
other and with the socket read of the next round; a round starts only once the previous one is done,
so each hash sees the bytes in order and at most two rounds are held (memory bounded by ``CHUNK``,
not by the body).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage_core import offload
from storage_core.errors import BadDigest, InvalidArgument, PayloadTooLarge
from storage_core.integrity import BLOCK_HASH, BLOCK_HASHES
from storage_core.layout import piece_count, piece_length

# Bytes per round from a stream that reads into the spool's buffers (``readinto`` and ``zero_copy``:
# storage_core.wsgi_body): large enough that the hashes release the GIL for milliseconds at a time and
# thread hand-offs cost nothing, small enough that an upload's three buffers are 12 MiB.
CHUNK = 4 * 1024 * 1024
# Bytes per round from any other stream (``read()``: werkzeug's, the S3 door's decoders): each read of
# gunicorn's input holds a few copies of what it returns for a while, and S3 clients send ten parts at
# once, so these rounds stay as small as the reads were before the threads.
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Digests:
    """What a client declared its body hashes to (checked once the body is spooled)."""

    md5: bytes | None = None  # the 16-byte digest
    sha256: str | None = None  # lower-case hex


class Spool:
    """The spooled body of one upload, with sha256, md5 and the per-block digests (``BLOCK_HASH``).

    Blocks never cross piece boundaries: block k of piece i covers
    ``[i*piece_size + k*block_size, min(i*piece_size + (k+1)*block_size, end of piece))``.
    """

    def __init__(self, directory: Path, piece_size: int, block_size: int, sha256: bool = True):
        directory.mkdir(parents=True, exist_ok=True)
        # one file per piece, ``upload-<random>.<index>``: a local location takes a piece by a hard link
        # (``PieceStream.link_to``) instead of a copy of its bytes. Piece 0 exists from the start (an
        # empty body has one empty file), the others from their first byte.
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".0", dir=directory)
        self._stem = name[: -len(".0")]
        self._fds: list[int] = [fd]
        self._linked: set[int] = set()  # pieces a location took by a hard link (the next one copies)
        self._writer: PieceWriter | None = None
        self._round_size = READ_CHUNK  # bytes asked of the stream per round (set by receive)
        self.piece_size = piece_size
        self.block_size = min(block_size, piece_size)
        self.size = 0
        # a multipart part needs no sha256 of its own (the file's is computed on Complete): one pass less
        self._sha256 = hashlib.sha256() if sha256 else None
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.block_hash = BLOCK_HASH
        self._new_block = BLOCK_HASHES[BLOCK_HASH]
        self._block = self._new_block()
        self._block_filled = 0
        self._blocked = 0  # bytes fed to the block digests (a thread's, during a round)
        self._digests: list[bytes] = []

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.discard()

    def piece_path(self, index: int) -> str:
        return f"{self._stem}.{index}"

    @property
    def paths(self) -> list[Path]:
        """The spool's files (one per piece received so far)."""
        return [Path(self.piece_path(index)) for index in range(len(self._fds))]

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for index, fd in enumerate(self._fds):
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.piece_path(index))
        self._fds = []

    def _block_room(self) -> int:
        in_piece = self._blocked % self.piece_size
        block_end = min((in_piece // self.block_size + 1) * self.block_size, self.piece_size)
        return block_end - in_piece

    def _feed(self, data: memoryview) -> None:
        while data:
            room = self._block_room()
            take = min(len(data), room)
            self._block.update(data[:take])
            self._block_filled += take
            self._blocked += take
            data = data[take:]
            if take == room:
                self._close_block()

    def _hash_sha256_and_blocks(self, chunk: bytes | memoryview) -> None:
        if self._sha256 is not None:
            self._sha256.update(chunk)
        self._feed(memoryview(chunk))

    def _open_pieces(self, end: int) -> None:
        """Create the files of the pieces up to byte ``end`` (before a round's write runs on a thread)."""
        while len(self._fds) * self.piece_size < end:
            self._fds.append(os.open(self.piece_path(len(self._fds)), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))

    def _write(self, chunk: bytes | memoryview, offset: int) -> None:
        """Write the bytes at ``offset`` of the body into the piece files (on the writing thread)."""
        if self._writer is None:
            self._writer = PieceWriter(self._fds, self.piece_size, self._round_size)
        self._writer.write(chunk, offset)

    def _finish(self) -> None:
        """The last piece written out and fsynced (each earlier one was as it was completed)."""
        if self._writer is not None:
            self._writer.finish()
            self._writer = None
        elif not self.size:
            os.fsync(self._fds[0])

    def _round(self, chunk: bytes | memoryview) -> list[offload.Pending]:
        """Hash and write one round's bytes on threads; the calls, to wait for."""
        offset = self.size
        self.size += len(chunk)
        self._open_pieces(self.size)
        return [offload.submit(self._md5.update, chunk),
                offload.submit(self._hash_sha256_and_blocks, chunk),
                offload.submit(self._write, chunk, offset)]

    def _close_block(self) -> None:
        if self._block_filled:
            self._digests.append(self._block.digest())
        self._block = self._new_block()
        self._block_filled = 0

    def receive(self, stream: BinaryIO, content_length: int | None, max_size: int) -> None:
        """Copy the body to disk; limits are enforced while streaming, not trusted from headers."""
        if content_length is not None and max_size and content_length > max_size:
            raise PayloadTooLarge(f"object larger than the limit of {max_size} bytes")
        remaining = content_length
        pending: list[offload.Pending] = []
        # a stream that reads into the caller's buffer (storage_core.wsgi_body) fills two buffers in turn:
        # one is read into while the other's round runs on the threads
        zero_copy = getattr(stream, "zero_copy", False) and hasattr(stream, "readinto")
        buffers = [bytearray(CHUNK), bytearray(CHUNK)] if zero_copy else None
        size = self._round_size = CHUNK if zero_copy else READ_CHUNK
        turn = 0
        try:
            while remaining is None or remaining > 0:
                want = size if remaining is None else min(size, remaining)
                if buffers is None:
                    chunk: bytes | memoryview = stream.read(want)
                else:
                    chunk = _fill(stream, memoryview(buffers[turn])[:want])
                    turn ^= 1
                if not chunk:
                    break
                if max_size and self.size + len(chunk) > max_size:
                    raise PayloadTooLarge(f"object larger than the limit of {max_size} bytes")
                offload.wait_all(pending)  # the previous round: every hash sees the bytes in order
                pending = self._round(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                offload.wait_all(pending)
            raise
        offload.wait_all(pending)
        if remaining:
            raise InvalidArgument(
                f"request body ended after {self.size} of {content_length} bytes"
            )
        self._close_block()
        offload.wait_all([offload.submit(self._finish)])  # its fsync off the event loop

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            raise RuntimeError("this spool was made without a sha256")
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def block_digests(self) -> bytes:
        return b"".join(self._digests)

    @property
    def piece_count(self) -> int:
        return piece_count(self.size, self.piece_size)

    def piece_length(self, index: int) -> int:
        return piece_length(self.size, self.piece_size, index)

    def verify(self, expected: Digests) -> None:
        """Check the digests the client declared; a mismatch is ``BadDigest`` and nothing gets stored."""
        if expected.md5 is not None and expected.md5 != self._md5.digest():
            raise BadDigest("the Content-MD5 you specified did not match what we received")
        if expected.sha256 is not None and expected.sha256 != self.sha256:  # a spool asked to verify one has one
            raise BadDigest("the X-Checksum-Sha256 you specified did not match what we received")

    def piece_reader(self, index: int) -> PieceStream:
        return PieceStream(self.piece_path(index), 0, self.piece_length(index), self._linked, index)


def _fill(stream: BinaryIO, view: memoryview) -> memoryview:
    """Read into ``view`` until it is full or the stream ends; the part filled."""
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return view[:filled]


ALIGN = 4096  # O_DIRECT: buffer address, file offset and length in multiples of this


class PieceWriter:
    """Writes an upload's bytes into its piece files with ``O_DIRECT`` where the filesystem allows it.

    A buffered ``pwrite`` copies every byte into the page cache, and on this kind of machine that copy
    (and the writeback it throttles on) cost more CPU and time than any hash (docs/uploads.md);
    ``O_DIRECT`` hands the disk the pages of one reused, aligned buffer instead. Bytes are gathered
    there until a multiple of ``ALIGN`` can go; a piece's unaligned tail is written buffered. Each
    piece is fsynced once complete, so a location that takes it by a link finds it durable. Used by
    one thread at a time (a round's writing call), in the order of the body."""

    def __init__(self, fds: list[int], piece_size: int, capacity: int):
        self._fds = fds  # the buffered descriptors, one per piece (the Spool's list)
        self._direct: dict[int, int] = {}
        self._piece_size = piece_size
        self._buffer = mmap.mmap(-1, capacity + ALIGN)  # page-aligned; holds < ALIGN + one round
        self._view = memoryview(self._buffer)
        self._held = 0  # bytes in the buffer, not written yet
        self._index = 0  # the piece they belong to
        self._at = 0  # their offset in it (a multiple of ALIGN)
        self._direct_ok = hasattr(os, "O_DIRECT")

    def _direct_fd(self, index: int) -> int | None:
        if not self._direct_ok:
            return None
        fd = self._direct.get(index)
        if fd is None:
            try:
                fd = os.open(f"/proc/self/fd/{self._fds[index]}", os.O_WRONLY | os.O_DIRECT)
            except OSError:  # tmpfs and a few others: buffered writes, as before
                self._direct_ok = False
                return None
            self._direct[index] = fd
        return fd

    def _flush(self, upto: int) -> None:
        """Write the first ``upto`` held bytes (a multiple of ALIGN, or all of them at a piece's end)."""
        aligned = upto - upto % ALIGN
        direct = self._direct_fd(self._index) if aligned else None
        written = 0
        if direct is not None:
            try:
                while written < aligned:
                    written += os.pwrite(direct, self._view[written:aligned], self._at + written)
            except OSError as exc:
                if exc.errno != errno.EINVAL or written:
                    raise
                self._direct_ok = False  # the filesystem refuses it after all: buffered from here on
        fd = self._fds[self._index]
        while written < upto:
            written += os.pwrite(fd, self._view[written:upto], self._at + written)
        rest = self._held - upto
        if rest:  # less than ALIGN: no overlap with the start
            self._view[:rest] = self._view[upto:self._held]
        self._held, self._at = rest, self._at + upto

    def _end_piece(self) -> None:
        self._flush(self._held)
        os.fsync(self._fds[self._index])
        direct = self._direct.pop(self._index, None)
        if direct is not None:
            os.close(direct)
        self._index, self._at = self._index + 1, 0

    def write(self, chunk: bytes | memoryview, offset: int) -> None:
        view = memoryview(chunk)
        while view:
            index, at = divmod(offset, self._piece_size)
            assert index == self._index and at == self._at + self._held, "bytes out of order"
            take = min(len(view), self._piece_size - at)
            self._view[self._held:self._held + take] = view[:take]
            self._held += take
            if at + take == self._piece_size:
                self._end_piece()
            else:
                self._flush(self._held - self._held % ALIGN)
            view, offset = view[take:], offset + take

    def finish(self) -> None:
        if self._index < len(self._fds):  # else the body ended with a piece, already written
            self._end_piece()
        self.close()

    def close(self) -> None:
        for fd in self._direct.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._direct.clear()
        self._view.release()
        self._buffer.close()


class PieceStream:
    """A file-like view of one piece of the spool, read with its own descriptor (thread-safe).

    A local location may take the piece file itself instead of its bytes: ``link_to`` (a hard link,
    once per piece: a second location gets a copy of its own, never the same inode), else
    ``copy_to`` (the kernel copies, no bytes through Python)."""

    def __init__(self, path: str, offset: int, length: int, linked: set[int] | None = None, index: int = 0):
        self._path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = offset
        self._remaining = length
        self._linked = linked
        self._index = index

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size is None or size < 0 else min(size, self._remaining)
        data = os.pread(self._fd, size, self._offset)
        self._offset += len(data)
        self._remaining -= len(data)
        return data

    def link_to(self, target: str) -> bool:
        """Hard-link the whole piece file (nothing read yet) at ``target``, a name that does not exist;
        False when it cannot be (already linked elsewhere, another filesystem, partly read)."""
        if self._linked is None or self._index in self._linked or self._offset != 0:
            return False
        if os.fstat(self._fd).st_size != self._remaining:
            return False
        try:
            os.link(self._path, target)
        except OSError:
            return False
        self._linked.add(self._index)
        self._remaining = 0
        return True

    def copy_to(self, fd: int) -> int:
        """Copy what is left of the piece to ``fd`` (at its position) in the kernel; the bytes copied.
        Stops early only if the spool file is shorter than the piece (the caller checks the count)."""
        copied = 0
        while self._remaining > 0:
            try:
                n = os.copy_file_range(self._fd, fd, min(self._remaining, 1 << 30), self._offset)
            except OSError:  # not between these filesystems: through a buffer instead
                data = self.read(min(self._remaining, 1 << 20))
                n = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                copied += n
                if not n:
                    break
                continue
            if not n:
                break
            self._offset += n
            self._remaining -= n
            copied += n
        return copied

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> PieceStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
