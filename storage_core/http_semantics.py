"""HTTP semantics of downloads (RFC 9110), free of the database: ranges, conditions, validators, headers.

Every door (the JSON API, the S3 API) decides ranges and conditional requests with these functions,
so a Range or an If-None-Match means the same whatever the protocol. Dates and entity tags are parsed
by werkzeug; what is decided here is the RFC's rules on top of them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import quote

from werkzeug.http import http_date as _werkzeug_http_date
from werkzeug.http import parse_date, parse_etags

from storage_core.errors import InvalidArgument
from storage_core.names import is_checksum

# More specs than this is refused with 416 (RFC 9110 section 14.2 lets a server refuse ranges it
# considers abusive): a client asking for more pieces of one object at once has no legitimate need.
MAX_RANGE_SPECS = 100


class TooManyRanges(ValueError):
    """A Range header with more than ``MAX_RANGE_SPECS`` specs."""


# OWS is only SP and HTAB (RFC 9110 section 5.6.3); str.strip() would also eat CR/LF, VT and Unicode
# spaces, which would let malformed headers through.
_OWS = " \t"

# Explicit [0-9] instead of \d: \d matches Unicode digits, and int() accepts them and "_", so the
# grammar (DIGIT is ASCII only, RFC 5234) has to be enforced before any conversion.
_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)")


def _digits_less(a: str, b: str) -> bool:
    """Whether the decimal digit string ``a`` is numerically less than ``b``, without int()."""
    # Compared as strings so arbitrarily long numbers never hit int()'s digit limit (4300 digits in
    # CPython >= 3.11) nor cost quadratic conversion time.
    a = a.lstrip("0") or "0"
    b = b.lstrip("0") or "0"
    return (len(a), a) < (len(b), b)


def _clamp(digits: str, cap: int) -> int:
    """The value of ``digits``, or ``cap`` when it is at least ``cap``."""
    # Every position at or beyond the representation's size behaves like the size itself (a first-pos
    # is unsatisfiable, a last-pos is clipped, a suffix covers everything), so clamping to size before
    # converting is exact and keeps huge numbers cheap. Numbers of any length are therefore valid,
    # never malformed.
    stripped = digits.lstrip("0") or "0"
    if len(stripped) > len(str(cap)):
        return cap
    return min(int(stripped), cap)


def parse_range_header(value: str | None, size: int) -> list[tuple[int, int]] | None:
    """Parse a ``Range`` header against a representation of ``size`` bytes (RFC 9110 14.1/14.2).

    Returns ``None`` when the header must be ignored (absent, another unit, malformed, or size 0 with
    a satisfiable suffix range) so the whole body is served with 200; ``[]`` when no range is
    satisfiable (416); otherwise the satisfiable ranges as ``(start, end_exclusive)``, coalesced and
    in ascending order. More than ``MAX_RANGE_SPECS`` well-formed specs raise ``TooManyRanges``.

    Numbers of any length are accepted as ordinary integers (positions past the end are clipped or
    unsatisfiable as the RFC says); they never make the header malformed.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if value is None:
        return None
    unit, eq, range_set = value.strip(_OWS).partition("=")
    # The unit is a token compared case-insensitively; isascii() keeps non-ASCII look-alikes whose
    # lower() is ASCII from matching.
    if not eq or not unit.isascii() or unit.lower() != "bytes":
        return None

    # Syntax pass over every element first: one malformed spec makes the whole header malformed, even
    # if other specs are satisfiable.
    specs: list[tuple[str, str]] = []
    for element in range_set.split(","):
        element = element.strip(_OWS)
        if not element:
            # Empty list elements are legal (RFC 9110 section 5.6.1.2).
            continue
        match = _SPEC_RE.fullmatch(element)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if not first and not last:
            return None
        if first and last and _digits_less(last, first):
            return None
        specs.append((first, last))
    if not specs:
        return None
    if len(specs) > MAX_RANGE_SPECS:
        raise TooManyRanges(f"{len(specs)} ranges requested; at most {MAX_RANGE_SPECS} are served at once")

    if size == 0:
        # Nothing is satisfiable in an empty representation except a non-zero suffix, whose result is
        # the whole (empty) representation: that is a plain 200, not a 206 (RFC 9110 section 14.1.2).
        has_suffix = any(not first and _digits_less("0", last) for first, last in specs)
        return None if has_suffix else []

    ranges: list[tuple[int, int]] = []
    for first, last in specs:
        if first:
            start = _clamp(first, size)
            if start >= size:
                continue  # first-pos past the end: unsatisfiable, dropped
            end = size if not last else _clamp(last, size - 1) + 1
            ranges.append((start, end))
        else:
            length = _clamp(last, size)
            if length == 0:
                continue  # "-0" asks for no bytes: unsatisfiable
            ranges.append((size - length, size))
    return coalesce(ranges)


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping and adjacent ranges merged, in ascending order (RFC 9110 section 14.2): one response
    never carries the same byte twice, so neither can it be charged twice."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def content_range(start: int, end: int, size: int) -> str:
    """``Content-Range`` value for the satisfied range ``[start, end)`` (last-pos is inclusive)."""
    if not 0 <= start < end <= size:
        raise ValueError(f"invalid range [{start}, {end}) for size {size}")
    return f"bytes {start}-{end - 1}/{size}"


def unsatisfied_content_range(size: int) -> str:
    """``Content-Range`` value sent with 416 (RFC 9110 section 14.4)."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return f"bytes */{size}"


# bchars of RFC 2046 section 5.1.1; a boundary outside this set (or with CR/LF) could break framing.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def multipart_layout(
    ranges: list[tuple[int, int]], size: int, content_type: str, boundary: str
) -> tuple[list[tuple[bytes, int, int]], bytes, int]:
    """Framing of a ``multipart/byteranges`` body (RFC 9110 section 14.6).

    Returns ``(parts, closing, total_length)``: the body is, for each ``(header, start, end)`` in
    ``parts``, ``header`` followed by bytes ``[start, end)`` of the representation, then ``closing``.
    ``total_length`` is the exact body length, so the response can carry ``Content-Length``.
    """
    if not ranges:
        raise ValueError("multipart/byteranges needs at least one range")
    if _BOUNDARY_RE.fullmatch(boundary) is None:
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    # A CR/LF in the content type (stored from an upload) would inject headers into the part.
    if any(c in content_type for c in "\r\n\0"):
        raise ValueError("content_type contains a control character")
    parts: list[tuple[bytes, int, int]] = []
    total = 0
    for i, (start, end) in enumerate(ranges):
        # The first delimiter has no preceding CRLF: nothing comes before it (no preamble).
        delimiter = f"--{boundary}" if i == 0 else f"\r\n--{boundary}"
        # latin-1 as for any WSGI header value (PEP 3333); a character outside it raises ValueError.
        header = (
            f"{delimiter}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: {content_range(start, end, size)}\r\n\r\n"
        ).encode("latin-1")
        parts.append((header, start, end))
        total += len(header) + (end - start)
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return parts, closing, total + len(closing)


# ---- validators and conditions -----------------------------------------------------------------

# An entity-tag list (RFC 9110 section 8.8.3): werkzeug's parser also takes unquoted words as tags, so
# a header is handed to it only when it is a well-formed list (etagc excludes DQUOTE but allows ",").
_ETAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
_ETAG_LIST_RE = re.compile(rf"[ \t,]*{_ETAG}(?:[ \t]*,[ \t,]*{_ETAG})*[ \t,]*")


def _is_weak(tag: str) -> bool:
    return tag.startswith("W/")


def _opaque(tag: str) -> str:
    """The opaque part of a quoted entity tag, without ``W/`` and quotes."""
    return (tag[2:] if _is_weak(tag) else tag)[1:-1]


def etag_matches(header: str, etag: str, *, weak: bool = True) -> bool:
    """Whether an ``If-None-Match`` (weak comparison) or ``If-Match`` (``weak=False``, strong comparison)
    list holds ``etag`` (RFC 9110 sections 13.1.1, 13.1.2). A malformed list matches nothing."""
    value = header.strip(_OWS)
    if value == "*":
        return True
    if not _ETAG_LIST_RE.fullmatch(value):
        return False
    tags = parse_etags(value)
    if weak:
        return tags.contains_weak(_opaque(etag))
    return not _is_weak(etag) and tags.contains(_opaque(etag))


def parse_http_date(value: str | None) -> dt.datetime | None:
    """An HTTP-date (any of the three forms RFC 9110 section 5.6.7 accepts) as an aware UTC datetime."""
    if not value:
        return None
    try:
        when = parse_date(value.strip(_OWS))
    except (OverflowError, ValueError):
        return None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def http_date(value: dt.datetime) -> str:
    """The IMF-fixdate of ``value`` (seconds, GMT)."""
    return _werkzeug_http_date(value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def if_range_allows(if_range: str | None, etag: str, last_modified_epoch: int, date_is_strong: bool = True) -> bool:
    """Whether ``If-Range`` lets the Range header apply (RFC 9110 section 13.1.5).

    With an entity tag only a strong exact match counts; with an HTTP-date only exact equality with
    the Last-Modified second counts, and only when that Last-Modified is a strong validator (section
    8.8.2.2: the representation did not change twice within that second). Anything else, garbage
    included, means "send it all".
    """
    if if_range is None:
        return True
    if_range = if_range.strip(_OWS)
    if if_range.startswith(('"', "W/")):
        # Strong comparison: a weak tag on either side never matches.
        return not _is_weak(if_range) and not _is_weak(etag) and if_range == etag
    if not date_is_strong:
        return False
    when = parse_http_date(if_range)
    if when is None:
        return False
    try:
        return when.timestamp() == last_modified_epoch
    except (OverflowError, ValueError):
        return False


def _seconds(when: dt.datetime) -> int:
    return int(when.timestamp())


@dataclass(frozen=True, slots=True)
class Conditions:
    """The request headers that shape a download."""

    method: str = "GET"
    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


def evaluate_preconditions(conditions: Conditions, etag: str, last_modified: dt.datetime) -> int | None:
    """The status the preconditions decide (412 or 304), or None to go on (RFC 9110 section 13.2.2).

    If-Match (strong comparison), else If-Unmodified-Since: 412 when false. Then If-None-Match (weak
    comparison), else If-Modified-Since (GET and HEAD only): 304 for GET and HEAD when false, 412
    otherwise. A date that does not parse is ignored, as the RFC says."""
    if conditions.if_match is not None:
        if not etag_matches(conditions.if_match, etag, weak=False):
            return 412
    elif conditions.if_unmodified_since is not None:
        since = parse_http_date(conditions.if_unmodified_since)
        if since is not None and _seconds(last_modified) > _seconds(since):
            return 412
    safe = conditions.method in ("GET", "HEAD")
    if conditions.if_none_match is not None:
        if etag_matches(conditions.if_none_match, etag):
            return 304 if safe else 412
    elif safe and conditions.if_modified_since is not None:
        since = parse_http_date(conditions.if_modified_since)
        if since is not None and _seconds(last_modified) <= _seconds(since):
            return 304
    return None


# ---- representation headers --------------------------------------------------------------------

# Types a browser may display inline without risk of running content from our origin.
INLINE_SAFE_TYPES = frozenset({
    "text/plain", "application/pdf", "application/json", "image/png", "image/jpeg", "image/gif",
    "image/webp", "image/avif", "audio/mpeg", "audio/ogg", "audio/wav", "video/mp4", "video/webm",
    "video/ogg",
})

# type "/" subtype, with optional parameters; no control characters (they would end up in headers)
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;\s*[^\x00-\x1f\x7f]*)?")


def validate_content_type(value: str | None) -> str:
    """The media type an upload declares (``application/octet-stream`` when it declares none)."""
    if not value:
        return "application/octet-stream"
    value = value.strip()
    if len(value) > 255 or not _MEDIA_TYPE_RE.fullmatch(value):
        raise InvalidArgument(f"Content-Type {value!r} is not a valid media type")
    return value


def content_disposition(filename: str, inline: bool) -> str:
    """RFC 6266 with an ASCII fallback and the RFC 5987 UTF-8 form of the name."""
    kind = "inline" if inline else "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in filename) or "download"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def may_be_inline(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in INLINE_SAFE_TYPES


# ---- digests a client declares ------------------------------------------------------------------

def parse_content_md5(value: str | None) -> bytes | None:
    """The 16-byte digest of a ``Content-MD5`` header (base64, RFC 1864)."""
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(_OWS), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise InvalidArgument("Content-MD5 must be the base64 of a 16-byte MD5 digest")
    return digest


def parse_hex_sha256(value: str | None, header: str) -> str | None:
    """A sha256 given in hex (either case) as the lower-case form checksums have."""
    if value is None:
        return None
    digest = value.strip(_OWS).lower()
    if not is_checksum(digest):
        raise InvalidArgument(f"{header} must be 64 hex characters")
    return digest
