"""S3 access keys: generation of key ids and secrets, and the envelope that keeps secrets unreadable at rest.

Why encryption and not a hash: a SigV4 signature is an HMAC keyed with a key derived from the secret
itself (``HMAC("AWS4" + secret, date)`` and on), over a string only known when the request arrives.
To check it the server must recompute it, so it needs the secret in clear at verification time; a
hash (even a slow one) cannot be used, and neither can a stored derived key, which changes every
day and region. So the secret is sealed with AES-256-GCM under a key that lives outside the database
(the environment), and opened when a request is verified.

What a database dump gives without that key: nothing usable. Each blob is a random 96-bit nonce and
an AES-GCM ciphertext; without the key it reveals neither the secret nor anything that would let
someone sign a request, and it cannot be altered undetected. The access key id is authenticated
data, so a blob copied onto another key id's row (to make a known secret serve another account)
fails to open. The key id in each blob is a fingerprint (an HMAC of the key), which tells which key
sealed it and nothing about the key. With the dump *and* the key an attacker has every secret: the
key belongs with the other secrets of the deployment, never in the database.

Blob layout (then URL-safe base64, as text for any column type)::

    version (1 byte = 1) | key fingerprint (8 bytes) | nonce (12 bytes) | ciphertext + GCM tag (16 bytes)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage_core.errors import ConfigurationError

ACCESS_KEY_PREFIX = "SSAK"  # "storage service access key", as AWS's start with AKIA
ACCESS_KEY_LENGTH = 20
SECRET_LENGTH = 40
# A-Z and 2-7 as AWS key ids (base32: no 0/O or 1/I to confuse when read aloud or retyped)
_KEY_ID_ALPHABET = string.ascii_uppercase + "234567"
# letters and digits only: AWS's secrets also use "/" and "+", which some tools mangle in shells,
# config files and URLs; 40 of 62 symbols is still 238 bits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_VERSION = 1
_FINGERPRINT_SIZE = 8
_NONCE_SIZE = 12
_HKDF_INFO = b"storage-service s3 access-key secrets v1"
_AAD_PREFIX = b"storage-service s3 access-key secret v1:"


class SealedSecretError(Exception):
    """A blob that does not open: sealed under a key this process lacks, altered, or moved to another id."""


def new_access_key_id() -> str:
    """``SSAK`` and 16 random base32 characters: 20 upper-case alphanumerics, 80 random bits."""
    body_length = ACCESS_KEY_LENGTH - len(ACCESS_KEY_PREFIX)
    return ACCESS_KEY_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(body_length))


def is_access_key_id(value: str) -> bool:
    """Whether ``value`` has the shape of a key id this service issues (checked before any lookup)."""
    return (len(value) == ACCESS_KEY_LENGTH and value.startswith(ACCESS_KEY_PREFIX)
            and all(c in _KEY_ID_ALPHABET for c in value[len(ACCESS_KEY_PREFIX):]))


def new_secret() -> str:
    """A 40-character secret access key from the ``secrets`` module's CSPRNG."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def derive_key(material: str) -> bytes:
    """A 32-byte sealing key derived with HKDF-SHA256 from an existing high-entropy secret.

    HKDF stretches nothing: ``material`` must already be a strong random secret (the JWT secret,
    say), not a password. The fixed info string makes the result independent of any other key
    derived from the same material.
    """
    if not material:
        raise ConfigurationError("the material of the access-key sealing key is empty")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(material.encode("utf-8"))


def _fingerprint(key: bytes) -> bytes:
    return hmac.new(key, b"storage-service sealing key fingerprint", hashlib.sha256).digest()[:_FINGERPRINT_SIZE]


def _aad(access_key_id: str) -> bytes:
    return _AAD_PREFIX + access_key_id.encode("utf-8")


class SecretBox:
    """Seals secrets under ``key`` (32 bytes); opens blobs sealed under it or any of ``previous``.

    Rotation: construct with the new key and the old ones in ``previous``; blobs sealed under an old
    key still open, and ``needs_reseal`` tells which to seal again under the new one.
    """

    def __init__(self, key: bytes, previous: Iterable[bytes] = ()):
        self._keys: dict[bytes, AESGCM] = {}
        for candidate in (key, *previous):
            if not isinstance(candidate, bytes | bytearray) or len(candidate) != 32:
                raise ConfigurationError("an access-key sealing key must be 32 bytes (AES-256)")
            self._keys.setdefault(_fingerprint(bytes(candidate)), AESGCM(bytes(candidate)))
        self._current = _fingerprint(bytes(key))

    def seal(self, access_key_id: str, secret: str) -> str:
        """The blob to store for ``secret``, bound to ``access_key_id``."""
        nonce = secrets.token_bytes(_NONCE_SIZE)
        ciphertext = self._keys[self._current].encrypt(nonce, secret.encode("utf-8"), _aad(access_key_id))
        blob = bytes([_VERSION]) + self._current + nonce + ciphertext
        return base64.urlsafe_b64encode(blob).decode("ascii")

    def _split(self, blob: str) -> tuple[bytes, bytes, bytes]:
        try:
            raw = base64.urlsafe_b64decode(blob.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise SealedSecretError("not a sealed secret") from None
        if len(raw) < 1 + _FINGERPRINT_SIZE + _NONCE_SIZE + 16 or raw[0] != _VERSION:
            raise SealedSecretError("not a sealed secret of a known version")
        fingerprint = raw[1:1 + _FINGERPRINT_SIZE]
        nonce = raw[1 + _FINGERPRINT_SIZE:1 + _FINGERPRINT_SIZE + _NONCE_SIZE]
        return fingerprint, nonce, raw[1 + _FINGERPRINT_SIZE + _NONCE_SIZE:]

    def open(self, access_key_id: str, blob: str) -> str:
        """The secret sealed in ``blob`` for ``access_key_id``; SealedSecretError if it does not open."""
        fingerprint, nonce, ciphertext = self._split(blob)
        cipher = self._keys.get(fingerprint)
        if cipher is None:
            raise SealedSecretError("sealed under a key this service does not hold (rotated out, or another "
                                    "deployment's)")
        try:
            return cipher.decrypt(nonce, ciphertext, _aad(access_key_id)).decode("utf-8")
        except InvalidTag:
            raise SealedSecretError(f"the sealed secret does not open for {access_key_id!r}: altered, or "
                                    "stored under another key id") from None

    def needs_reseal(self, blob: str) -> bool:
        """Whether ``blob`` was sealed under a key other than the current one."""
        return self._split(blob)[0] != self._current
