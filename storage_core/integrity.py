"""The hash of each integrity block: recorded per block at upload, checked on every read (services/reader.py).

A file records the name of the hash its ``block_digests`` were made with (``files.block_hash``), so the
choice can change without touching stored files. New uploads use BLAKE3: as collision-resistant as
SHA-256 and about four times faster per core (docs/benchmarks.md), which is what makes verifying every
block of every download affordable. Files stored before migration 0003 keep their SHA-256 digests
and are verified with SHA-256.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import blake3

DIGEST_SIZE = 32  # bytes per block digest, for every hash here

BLOCK_HASHES: dict[str, Callable[[], Any]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}
BLOCK_HASH = "blake3"  # the hash of new uploads

# Digests of at most this many bytes come with the resolve of a download (128 blocks); longer ones
# (a 256 MiB file has 4,096 64 KiB blocks: 128 KiB of digests) are fetched once per process and kept in
# a DigestCache, instead of crossing the wire with every ranged read.
INLINE_DIGESTS = 4096
DIGEST_CACHE_BYTES = 64 * 1024 * 1024  # per process: the digests of 512 GiB of 64 KiB blocks


class DigestCache:
    """Block digests of files, least recently used dropped first, bounded in bytes (per process).

    Keyed by (checksum, piece size, block size, hash): the digests are a function of the content
    (named by its sha256) and of these three, so an entry can never be stale. A file deleted and
    stored again has the same digests, or another key; a deleted file is refused by the resolve, never
    by this cache. Thread- and greenlet-safe: one dict operation per call (``move_to_end`` and
    ``popitem`` on an OrderedDict are atomic under the GIL; a lost race only costs a refetch).
    """

    def __init__(self, max_bytes: int = DIGEST_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, int, str], bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, int, int, str]) -> bytes | None:
        try:
            self._entries.move_to_end(key)
            return self._entries[key]
        except KeyError:
            return None

    def put(self, key: tuple[str, int, int, str], digests: bytes) -> None:
        if len(digests) > self.max_bytes or key in self._entries:
            return
        self._entries[key] = digests
        self._bytes += len(digests)
        while self._bytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped)
