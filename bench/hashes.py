"""Block hash speed: what verifying a 1 MiB integrity block costs with each hash of storage_core.integrity.

One core, in this process: each hash digests the same random block for ``seconds`` and the MiB/s is
the bytes hashed over the CPU time spent (process time, so a busy machine lowers it less than wall
time would). BLAKE3 is the hash of new uploads; SHA-256 that of files stored before migration 0003.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.harness import MiB
from storage_core.integrity import BLOCK_HASH, BLOCK_HASHES


def measure(seconds: float = 1.0, block: int = MiB) -> list[dict[str, Any]]:
    data = os.urandom(block)
    results = []
    for name, new in BLOCK_HASHES.items():
        new(data).digest()  # warm up
        rounds, started = 0, time.process_time()
        while (spent := time.process_time() - started) < seconds:
            new(data).digest()
            rounds += 1
        results.append({"hash": name, "block": block, "mib_s": rounds * block / MiB / spent,
                        "default": name == BLOCK_HASH})
    return results
