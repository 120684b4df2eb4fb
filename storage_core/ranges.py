"""Pure helpers for byte-range downloads: Range/If-Range/If-None-Match, piece and block maps, multipart."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_RANGE_SPECS",
    "PieceRange",
    "block_span",
    "blocks_per_piece",
    "content_range",
    "etag_matches",
    "global_block_index",
    "if_range_allows",
    "multipart_layout",
    "parse_range_header",
    "split_range",
    "unsatisfied_content_range",
]

# More specs than this is treated as a malformed header (RFC 9110 section 14.2 lets a server ignore
# or refuse ranges it considers abusive); ignoring serves 200 with one body, which costs the client
# nothing legitimate and keeps the multipart response bounded.
MAX_RANGE_SPECS = 100

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

    Returns ``None`` when the header must be ignored (absent, another unit, malformed, more than
    ``MAX_RANGE_SPECS`` specs, or size 0 with a satisfiable suffix range) so the whole body is
    served with 200; ``[]`` when no range is satisfiable (416); otherwise the satisfiable ranges as
    ``(start, end_exclusive)`` in request order, neither merged nor reordered.

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
        if len(specs) > MAX_RANGE_SPECS:
            return None
    if not specs:
        return None

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
    return ranges


@dataclass(frozen=True, slots=True)
class PieceRange:
    """The part of one piece a byte range touches: ``length`` bytes at ``offset`` within piece ``index``."""

    index: int
    offset: int
    length: int


def split_range(start: int, end: int, piece_size: int) -> list[PieceRange]:
    """Map the file byte range ``[start, end)`` onto the fixed-size pieces it touches, in order."""
    if piece_size <= 0:
        raise ValueError(f"piece_size must be > 0, got {piece_size}")
    if start < 0 or end < 0 or start > end:
        raise ValueError(f"invalid range [{start}, {end})")
    pieces: list[PieceRange] = []
    pos = start
    while pos < end:
        index, offset = divmod(pos, piece_size)
        length = min(piece_size - offset, end - pos)
        pieces.append(PieceRange(index, offset, length))
        pos += length
    return pieces


def blocks_per_piece(piece_size: int, block_size: int) -> int:
    """Number of integrity blocks in a full piece (the last block may be short)."""
    if piece_size <= 0 or block_size <= 0:
        raise ValueError(f"piece_size and block_size must be > 0, got {piece_size}, {block_size}")
    return -(-piece_size // block_size)


def global_block_index(piece_index: int, block_number: int, piece_size: int, block_size: int) -> int:
    """File-wide number of a block, with every piece reserving ``blocks_per_piece`` slots."""
    per_piece = blocks_per_piece(piece_size, block_size)
    if piece_index < 0 or not 0 <= block_number < per_piece:
        raise ValueError(f"invalid block ({piece_index}, {block_number}) with {per_piece} blocks per piece")
    # Fixed stride even for the short last piece, so an index never depends on the file size.
    return piece_index * per_piece + block_number


def block_span(
    piece_index: int, offset: int, length: int, piece_len: int, block_size: int
) -> list[tuple[int, int, int]]:
    """Blocks covering a read of ``length`` bytes at ``offset`` in a piece of ``piece_len`` bytes.

    Each is ``(block_number, block_start, block_len)`` within the piece; block ``k`` spans
    ``[k*block_size, min((k+1)*block_size, piece_len))``, so a block never crosses the piece end.
    ``piece_index`` is only validated: block coordinates are piece-relative (see global_block_index).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    if piece_index < 0 or piece_len < 0 or offset < 0 or length < 0 or offset + length > piece_len:
        raise ValueError(
            f"read of {length} bytes at {offset} does not fit piece {piece_index} of {piece_len} bytes"
        )
    if length == 0:
        return []
    first = offset // block_size
    last = (offset + length - 1) // block_size
    return [
        (k, k * block_size, min((k + 1) * block_size, piece_len) - k * block_size)
        for k in range(first, last + 1)
    ]


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


def _is_weak(tag: str) -> bool:
    return tag.startswith("W/")


def if_range_allows(if_range: str | None, etag: str, last_modified_epoch: int) -> bool:
    """Whether ``If-Range`` lets the Range header apply (RFC 9110 section 13.1.5).

    With an entity tag only a strong exact match counts; with an HTTP-date only exact equality
    with the Last-Modified second counts. Anything else (including garbage) means "send it all".
    """
    if if_range is None:
        return True
    if_range = if_range.strip(_OWS)
    if if_range.startswith(('"', "W/")):
        # Strong comparison: a weak tag on either side never matches.
        return not _is_weak(if_range) and not _is_weak(etag) and if_range == etag
    try:
        when = parsedate_to_datetime(if_range)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if when is None:  # older Pythons returned None instead of raising
        return False
    if when.tzinfo is None:
        # "-0000" yields a naive datetime; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp() == last_modified_epoch
    except (OverflowError, ValueError):
        return False


# An entity tag (RFC 9110 section 8.8.3); etagc excludes DQUOTE but allows ",", so lists cannot be
# split on commas naively.
_ETAG_RE = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')


def _opaque(tag: str) -> str:
    return tag[2:] if _is_weak(tag) else tag


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of ``If-None-Match`` against ``etag`` (RFC 9110 section 13.1.2)."""
    value = if_none_match.strip(_OWS)
    if value == "*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(tag) == wanted for tag in _ETAG_RE.findall(value))
