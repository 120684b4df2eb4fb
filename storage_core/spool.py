"""Upload spooling: the body goes to a temporary file while its digests and block checksums are computed."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage_core.errors import BadDigest, InvalidArgument, PayloadTooLarge
from storage_core.integrity import BLOCK_HASH, BLOCK_HASHES
from storage_core.layout import piece_count, piece_length

CHUNK = 1024 * 1024


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
        fd, name = tempfile.mkstemp(prefix="upload-", dir=directory)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "w+b")
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
        self._digests: list[bytes] = []

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.discard()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    def _block_room(self) -> int:
        in_piece = self.size % self.piece_size
        block_end = min((in_piece // self.block_size + 1) * self.block_size, self.piece_size)
        return block_end - in_piece

    def _feed(self, data: memoryview) -> None:
        while data:
            room = self._block_room()
            take = min(len(data), room)
            self._block.update(data[:take])
            self._block_filled += take
            self.size += take
            data = data[take:]
            if take == room:
                self._close_block()

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
        while remaining is None or remaining > 0:
            chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            if max_size and self.size + len(chunk) > max_size:
                raise PayloadTooLarge(f"object larger than the limit of {max_size} bytes")
            self.file.write(chunk)
            if self._sha256 is not None:
                self._sha256.update(chunk)
            self._md5.update(chunk)
            self._feed(memoryview(chunk))
            if remaining is not None:
                remaining -= len(chunk)
        if remaining:
            raise InvalidArgument(
                f"request body ended after {self.size} of {content_length} bytes"
            )
        self._close_block()
        self.file.flush()

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
        return PieceStream(self.path, index * self.piece_size, self.piece_length(index))


class PieceStream:
    """A file-like view of one piece of the spool file, read with its own descriptor (thread-safe)."""

    def __init__(self, path: Path, offset: int, length: int):
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = offset
        self._remaining = length

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size is None or size < 0 else min(size, self._remaining)
        data = os.pread(self._fd, size, self._offset)
        self._offset += len(data)
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> PieceStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
