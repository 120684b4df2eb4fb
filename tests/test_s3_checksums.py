"""Whole-object checksums as S3 sends them: known vectors, botocore's own values, incremental = one shot."""

from __future__ import annotations

import base64
import io
import itertools

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given
from hypothesis import strategies as st

from storage_core.checksums import SUPPORTED, Checksum, algorithm_of, checksum_of, decode
from storage_core.errors import BadDigest, InvalidArgument

CHECK = b"123456789"  # the CRC catalogue's check input


def b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def test_known_vectors():
    assert checksum_of("crc32", CHECK) == b64(0xCBF43926)
    assert checksum_of("crc32c", CHECK) == b64(0xE3069283)
    assert checksum_of("sha1", b"abc") == base64.b64encode(bytes.fromhex(
        "a9993e364706816aba3e25717850c26c9cd0d89d")).decode()
    assert checksum_of("sha256", b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert checksum_of("crc32", b"") == "AAAAAA=="


@pytest.mark.parametrize("algorithm, botocore_cls", [("crc32", Crc32Checksum), ("sha1", Sha1Checksum),
                                                     ("sha256", Sha256Checksum)])
def test_values_equal_botocores(algorithm, botocore_cls):
    data = bytes(range(256)) * 1000
    assert checksum_of(algorithm, data) == botocore_cls().handle(io.BytesIO(data))


@given(st.sampled_from(SUPPORTED), st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=5))
def test_incremental_equals_one_shot(algorithm, data, cuts):
    checksum = Checksum(algorithm)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for a, b in itertools.pairwise(bounds):
        checksum.update(data[a:b])
    assert checksum.b64digest() == checksum_of(algorithm, data)
    assert checksum.matches(checksum_of(algorithm, data))


def test_algorithm_names_as_headers_and_sdk_values():
    assert algorithm_of("CRC32C") == "crc32c"
    assert algorithm_of("x-amz-checksum-sha256") == "sha256"
    assert algorithm_of(" X-Amz-Checksum-CRC32 ") == "crc32"
    with pytest.raises(InvalidArgument, match="CRC64NVME checksums are not supported"):
        algorithm_of("CRC64NVME")
    with pytest.raises(InvalidArgument, match="unknown"):
        algorithm_of("md5")


def test_malformed_values_are_invalid_arguments():
    for value in ("not base64", "AAAA", base64.b64encode(b"\0" * 5).decode(), ""):
        with pytest.raises(InvalidArgument):
            decode("crc32", value)
    assert decode("crc32", "AAAAAA==") == b"\0\0\0\0"


def test_verify_words_the_mismatch_as_s3_does():
    checksum = Checksum("crc32c")
    checksum.update(CHECK)
    checksum.verify(b64(0xE3069283))
    with pytest.raises(BadDigest) as caught:
        checksum.verify(b64(0xE3069284))
    assert caught.value.detail == "The CRC32C you specified did not match the calculated checksum."
