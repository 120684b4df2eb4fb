"""The names of the domain and their one validator each: checksums, bucket names, object keys, location names.

Every door (the JSON API, `storage-admin`, the S3 API) and the services call these, so a name is valid
or invalid the same way everywhere. Patterns are matched with ``fullmatch``: ``re.match`` on ``^...$``
accepts a trailing newline.
"""

from __future__ import annotations

import re

from storage_core.errors import InvalidArgument

_CHECKSUM = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_LOCATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

# S3 reserves these for its own endpoints (access points, Object Lambda, directory buckets, ...);
# a bucket so named would break virtual-host addressing in S3 clients
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
MAX_KEY_BYTES = 1024


def is_checksum(value: object) -> bool:
    return isinstance(value, str) and _CHECKSUM.fullmatch(value) is not None


def validate_checksum(value: str) -> str:
    """A file's checksum: a sha256 digest as 64 lower-case hex characters."""
    if not is_checksum(value):
        raise InvalidArgument("checksum must be a sha256 digest: 64 lower-case hex characters")
    return value


def validate_bucket_name(name: str) -> str:
    """Every S3 bucket naming rule, reserved prefixes and suffixes included."""
    if not isinstance(name, str) or not 3 <= len(name) <= 63:
        raise InvalidArgument("bucket names are 3 to 63 characters long")
    if _BUCKET.fullmatch(name) is None:
        raise InvalidArgument("bucket names use lower-case letters, digits, dots and hyphens, "
                              "and begin and end with a letter or digit")
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidArgument("bucket names must not contain '..', '.-' or '-.'")
    if _IPV4.fullmatch(name):
        raise InvalidArgument("bucket names must not look like an IP address")
    for prefix in RESERVED_BUCKET_PREFIXES:
        if name.startswith(prefix):
            raise InvalidArgument(f"bucket names must not begin with {prefix!r} (reserved by S3)")
    for suffix in RESERVED_BUCKET_SUFFIXES:
        if name.endswith(suffix):
            raise InvalidArgument(f"bucket names must not end with {suffix!r} (reserved by S3)")
    return name


def validate_key(key: str) -> str:
    """An object key: 1 to 1024 bytes of UTF-8 without control characters (they would end up in headers)."""
    if not key:
        raise InvalidArgument("object key must not be empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("object key must be valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidArgument(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidArgument("object key must not contain control characters")
    return key


def validate_location_name(name: str) -> str:
    if not isinstance(name, str) or _LOCATION.fullmatch(name) is None:
        raise InvalidArgument("location names are 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")
    return name
