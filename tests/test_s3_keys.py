"""Access keys: id and secret generation, and the AES-GCM envelope that keeps secrets unreadable in a dump."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import string

import pytest

from storage_core.errors import ConfigurationError
from storage_core.s3.keys import (
    ACCESS_KEY_PREFIX,
    SealedSecretError,
    SecretBox,
    derive_key,
    is_access_key_id,
    new_access_key_id,
    new_secret,
)
from storage_core.s3.sigv4 import verify
from tests.support.s3_signing import minio_signed

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_access_key_ids_look_like_aws_ones_with_our_prefix():
    ids = {new_access_key_id() for _ in range(500)}
    assert len(ids) == 500
    for value in ids:
        assert len(value) == 20 and value.startswith(ACCESS_KEY_PREFIX)
        assert value.isupper() and value.isalnum() and value.isascii()
        assert is_access_key_id(value)
    assert not is_access_key_id("AKIAIOSFODNN7EXAMPLE")
    assert not is_access_key_id(ACCESS_KEY_PREFIX + "a" * 16)
    assert not is_access_key_id(ACCESS_KEY_PREFIX + "A" * 15)


def test_secrets_are_forty_random_alphanumerics():
    values = {new_secret() for _ in range(500)}
    assert len(values) == 500
    alphabet = set(string.ascii_letters + string.digits)
    assert all(len(v) == 40 and set(v) <= alphabet for v in values)
    # every symbol shows up: the generator is not stuck on a subset
    assert set("".join(values)) == alphabet


def test_a_sealed_secret_opens_for_its_key_id_only():
    box = SecretBox(KEY)
    key_id, secret = new_access_key_id(), new_secret()
    blob = box.seal(key_id, secret)
    assert box.open(key_id, blob) == secret
    assert secret not in blob and secret.encode() not in base64.urlsafe_b64decode(blob)
    with pytest.raises(SealedSecretError, match="another key id"):
        box.open(new_access_key_id(), blob)  # a blob moved to another row does not open


def test_sealing_twice_gives_different_blobs():
    box = SecretBox(KEY)
    assert box.seal("SSAKAAAAAAAAAAAAAAAA", "s") != box.seal("SSAKAAAAAAAAAAAAAAAA", "s")


def test_a_dump_without_the_key_yields_nothing():
    blob = SecretBox(KEY).seal("SSAKAAAAAAAAAAAAAAAA", "the secret")
    with pytest.raises(SealedSecretError, match="does not hold"):
        SecretBox(OTHER_KEY).open("SSAKAAAAAAAAAAAAAAAA", blob)


def test_any_altered_byte_is_detected():
    box = SecretBox(KEY)
    raw = bytearray(base64.urlsafe_b64decode(box.seal("SSAKAAAAAAAAAAAAAAAA", "the secret")))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        with pytest.raises(SealedSecretError):
            box.open("SSAKAAAAAAAAAAAAAAAA", base64.urlsafe_b64encode(bytes(altered)).decode())
    for junk in ("", "not base64 at all!", base64.urlsafe_b64encode(b"\x01short").decode(), "é"):
        with pytest.raises(SealedSecretError):
            box.open("SSAKAAAAAAAAAAAAAAAA", junk)


def test_rotation_opens_old_blobs_and_says_which_to_reseal():
    old = SecretBox(OTHER_KEY).seal("SSAKAAAAAAAAAAAAAAAA", "old secret")
    rotated = SecretBox(KEY, previous=[OTHER_KEY])
    assert rotated.open("SSAKAAAAAAAAAAAAAAAA", old) == "old secret"
    assert rotated.needs_reseal(old)
    fresh = rotated.seal("SSAKAAAAAAAAAAAAAAAA", "old secret")
    assert not rotated.needs_reseal(fresh) and SecretBox(KEY).open("SSAKAAAAAAAAAAAAAAAA", fresh) == "old secret"


def test_keys_must_be_32_bytes():
    bad_keys: list = [b"", b"x" * 16, b"x" * 33, "x" * 32]  # the last is a str, not bytes
    for bad in bad_keys:
        with pytest.raises(ConfigurationError):
            SecretBox(bad)
    with pytest.raises(ConfigurationError):
        SecretBox(KEY, previous=[b"short"])


def test_derive_key_is_stable_and_separated():
    assert derive_key("jwt secret material") == derive_key("jwt secret material")
    assert len(derive_key("jwt secret material")) == 32
    assert derive_key("jwt secret material") != derive_key("jwt secret materiaL")
    # not a plain hash of the material
    assert derive_key("m") != hashlib.sha256(b"m").digest()
    with pytest.raises(ConfigurationError):
        derive_key("")


def test_a_generated_and_sealed_key_signs_requests_the_verifier_accepts():
    box = SecretBox(derive_key(secrets.token_urlsafe(32)))
    key_id, secret = new_access_key_id(), new_secret()
    table = {key_id: box.seal(key_id, secret)}  # what the database would hold

    def lookup(access_key_id: str) -> str | None:
        blob = table.get(access_key_id)
        return box.open(access_key_id, blob) if blob else None

    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    view = minio_signed("GET", "bkt", "k", date=now, access_key=key_id, secret=secret)
    assert verify(view, lookup=lookup, region="us-east-1", now=now).access_key_id == key_id
