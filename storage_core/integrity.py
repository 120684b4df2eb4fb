"""The hash of each integrity block: recorded per block at upload, checked on every read (services/reader.py).

A file records the name of the hash its ``block_digests`` were made with (``files.block_hash``), so the
choice can change without touching stored files. New uploads use BLAKE3: as collision-resistant as
SHA-256 and about four times faster per core (docs/benchmarks.md), which is what makes verifying every
block of every download affordable. Files stored before migration 0003 keep their SHA-256 digests
and are verified with SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import blake3

DIGEST_SIZE = 32  # bytes per block digest, for every hash here

BLOCK_HASHES: dict[str, Callable[[], Any]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}
BLOCK_HASH = "blake3"  # the hash of new uploads
