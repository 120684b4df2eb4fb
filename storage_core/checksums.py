"""Whole-object checksums a client may send or ask for (S3's ``x-amz-checksum-*``), computed incrementally.

They sit below the doors because the upload service computes and records them whatever door the
bytes came through; the S3 door only parses the headers and trailers that carry them. Values are
the base64 of the big-endian digest, as S3 sends them.

CRC32 comes from zlib, CRC32C from the ``crc32c`` package (hardware-accelerated where the CPU has
SSE 4.2 or ARMv8 CRC instructions). CRC64NVME is not supported: the one well-kept implementation
(awscrt) is the whole AWS common runtime, and installing it switches every botocore signer in the
process to its CRT variant. ``SUPPORTED`` is what a caller asks before accepting an algorithm.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol

import crc32c as _crc32c

from storage_core.errors import BadDigest, InvalidArgument

HEADER_PREFIX = "x-amz-checksum-"


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC as a hashlib-like object: update() then digest() (4 bytes, big-endian)."""

    def __init__(self, function: Callable[[bytes, int], int]):
        self._function = function
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._function(data, self._value) & 0xFFFFFFFF

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def _crc32c_update(data: bytes, value: int) -> int:
    return _crc32c.crc32c(data, value=value)


_FACTORIES: dict[str, Callable[[], _Digest]] = {
    "crc32": lambda: _Crc(zlib.crc32),
    "crc32c": lambda: _Crc(_crc32c_update),
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "sha256": hashlib.sha256,
}
_SIZES = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32}

SUPPORTED: tuple[str, ...] = tuple(_FACTORIES)
# S3 names an algorithm in upper case in headers (x-amz-checksum-algorithm, x-amz-sdk-checksum-algorithm)
# and in messages ("The CRC32 you specified ..."); the header suffix is lower case.
KNOWN = (*SUPPORTED, "crc64nvme")


def algorithm_of(name: str) -> str:
    """``crc32`` for ``CRC32``, ``x-amz-checksum-crc32`` or ``crc32``; InvalidArgument if unsupported."""
    value = name.strip().lower()
    if value.startswith(HEADER_PREFIX):
        value = value[len(HEADER_PREFIX):]
    if value in _FACTORIES:
        return value
    if value in KNOWN:
        raise InvalidArgument(f"{value.upper()} checksums are not supported by this service; "
                              f"use one of {', '.join(a.upper() for a in SUPPORTED)}")
    raise InvalidArgument(f"unknown checksum algorithm {name!r}")


def decode(algorithm: str, value: str) -> bytes:
    """The digest a client sent as base64; InvalidArgument if it is not one of the right length."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _SIZES[algorithm]:
        raise InvalidArgument(f"the {HEADER_PREFIX}{algorithm} value is not the base64 of a "
                              f"{_SIZES[algorithm]}-byte {algorithm.upper()} digest")
    return raw


class Checksum:
    """One incremental checksum: ``update()`` as bytes arrive, then ``b64digest()`` or ``verify()``."""

    def __init__(self, algorithm: str):
        self.algorithm = algorithm_of(algorithm)
        self._digest = _FACTORIES[self.algorithm]()

    def update(self, data: bytes) -> None:
        self._digest.update(data)

    def digest(self) -> bytes:
        return self._digest.digest()

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")

    def matches(self, expected_b64: str) -> bool:
        """Whether the bytes so far have the checksum a client sent (InvalidArgument if malformed)."""
        return decode(self.algorithm, expected_b64) == self.digest()

    def verify(self, expected_b64: str) -> None:
        """BadDigest, worded as S3 words it, unless the bytes so far have this checksum."""
        if not self.matches(expected_b64):
            raise BadDigest(f"The {self.algorithm.upper()} you specified did not match the calculated checksum.")


def checksum_of(algorithm: str, data: bytes) -> str:
    """The base64 checksum of ``data`` in one call."""
    checksum = Checksum(algorithm)
    checksum.update(data)
    return checksum.b64digest()
