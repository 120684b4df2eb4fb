"""Unit and property tests of http_semantics (Range, conditions, multipart framing) and layout (piece/block maps)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from itertools import pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storage_core.http_semantics import (
    MAX_RANGE_SPECS,
    TooManyRanges,
    content_range,
    etag_matches,
    if_range_allows,
    multipart_layout,
    parse_range_header,
    unsatisfied_content_range,
)
from storage_core.layout import PieceRange, block_span, blocks_per_piece, global_block_index, split_range

FAST = settings(max_examples=300, deadline=None)

# ---------------------------------------------------------------------------------------------------
# parse_range_header: RFC 9110 section 14.1.2 examples (representation of 10000 bytes)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", [(0, 500)]),
        ("bytes=500-999", [(500, 1000)]),
        ("bytes=-500", [(9500, 10000)]),
        ("bytes=9500-", [(9500, 10000)]),
        ("bytes=0-0,-1", [(0, 1), (9999, 10000)]),
        ("bytes= 0-999, 4500-5499, -1000", [(0, 1000), (4500, 5500), (9000, 10000)]),
        ("bytes=500-600,601-999", [(500, 1000)]),  # adjacent: coalesced (RFC 9110 section 14.2)
        ("bytes=500-700,601-999", [(500, 1000)]),  # overlapping: coalesced
    ],
)
def test_rfc_examples(header: str, expected: list[tuple[int, int]]) -> None:
    assert parse_range_header(header, 10000) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("BYTES=0-1", [(0, 2)]),  # unit is case-insensitive
        ("Bytes=0-1", [(0, 2)]),
        ("bytes=0-20000", [(0, 10000)]),  # last-pos clipped
        ("bytes=9999-99999", [(9999, 10000)]),
        ("bytes=-20000", [(0, 10000)]),  # suffix longer than the representation: all of it
        ("bytes=-10000", [(0, 10000)]),
        ("bytes=0-", [(0, 10000)]),
        ("bytes=9999-", [(9999, 10000)]),
        ("bytes=5-5", [(5, 6)]),
        ("bytes=007-010", [(7, 11)]),  # leading zeros are just digits
        ("bytes=1-2,,4-5", [(1, 3), (4, 6)]),  # empty list elements allowed
        ("bytes=,1-2", [(1, 3)]),
        ("bytes=1-2,", [(1, 3)]),
        ("bytes=1-2 ,\t4-5", [(1, 3), (4, 6)]),  # OWS around commas
        ("bytes=\t1-2\t", [(1, 3)]),
        ("  bytes=1-2  ", [(1, 3)]),
        ("bytes=10000-,0-0", [(0, 1)]),  # unsatisfiable spec dropped, others kept in order
        ("bytes=-1,0-0", [(0, 1), (9999, 10000)]),  # ascending, whatever the request order
        ("bytes=0-0,0-0", [(0, 1)]),  # duplicates served once
        ("bytes=0-,0-,0-,0-", [(0, 10000)]),  # the same bytes many times: once
        ("bytes=0-9,5-14,20-29,15-19", [(0, 30)]),  # overlapping and adjacent in any order
        ("bytes=-0,5-9", [(5, 10)]),
    ],
)
def test_valid_headers(header: str, expected: list[tuple[int, int]]) -> None:
    assert parse_range_header(header, 10000) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes= , ,",
        "bytes=-",
        "bytes=5",
        "bytes=5-4",  # last < first
        "bytes=1-2,5-4",  # one bad spec spoils the whole header
        "bytes=a-5",
        "bytes=1-b",
        "bytes=+1-5",
        "bytes=-+5",
        "bytes=--5",
        "bytes=1--5",
        "bytes=1-2-3",
        "bytes=0x10-20",
        "bytes=1.5-2",
        "bytes=1_0-20",  # int() would accept this
        "bytes=\u0661-\u0662",  # Arabic-Indic digits: \d and int() accept them, DIGIT does not
        "bytes=1 -2",
        "bytes=1- 2",
        "bytes=1-2;3-4",
        "bytes=1-2\n,3-4",  # only SP and HTAB are OWS
        "bytes =0-1",
        "bytes= =0-1",
        "items=0-1",
        "none=0-1",
        "=0-1",
        "bytes:0-1",
        "byte=0-1",
        "bytesx=0-1",
        "bytes=99999999999999999999999999999-1",  # huge first > last
    ],
)
def test_malformed_is_ignored(header: str) -> None:
    assert parse_range_header(header, 10000) is None


def test_absent_header() -> None:
    assert parse_range_header(None, 10000) is None
    assert parse_range_header(None, 0) is None


def test_too_many_specs_are_refused() -> None:
    at_limit = "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGE_SPECS))
    assert parse_range_header(at_limit, 10000) == [(2 * i, 2 * i + 1) for i in range(MAX_RANGE_SPECS)]
    over = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGE_SPECS + 1))
    with pytest.raises(TooManyRanges):
        parse_range_header(over, 10000)
    with pytest.raises(TooManyRanges):  # counted before coalescing
        parse_range_header("bytes=" + ",".join(["0-"] * (MAX_RANGE_SPECS + 1)), 10000)
    # Empty elements do not count as specs; a malformed header is ignored however long it is.
    padded = "bytes=" + ",,".join(f"{i}-{i}" for i in range(MAX_RANGE_SPECS))
    assert parse_range_header(padded, 10000) == [(0, MAX_RANGE_SPECS)]
    assert parse_range_header(over + ",x", 10000) is None


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",
        "bytes=10000-10001",
        "bytes=20000-30000",
        "bytes=-0",
        "bytes=-0,10000-",
        "bytes=-000",
        "bytes=99999999999999999999999999999-",
    ],
)
def test_unsatisfiable(header: str) -> None:
    assert parse_range_header(header, 10000) == []


def test_huge_numbers() -> None:
    huge = "9" * 30
    assert parse_range_header(f"bytes=0-{huge}", 10000) == [(0, 10000)]
    assert parse_range_header(f"bytes=-{huge}", 10000) == [(0, 10000)]
    assert parse_range_header(f"bytes={huge}-{huge}", 10000) == []
    assert parse_range_header(f"bytes=5-{huge},-{huge}", 10000) == [(0, 10000)]


def test_huge_numbers_exact_ordering() -> None:
    a, b = 10**29, 10**30 - 1  # 30 digits each, a < b
    assert parse_range_header(f"bytes={a}-{b}", 10000) == []
    assert parse_range_header(f"bytes={b}-{a}", 10000) is None
    # Beyond CPython's int() digit limit (4300): still no crash.
    very = "1" + "0" * 5000
    assert parse_range_header(f"bytes=0-{very}", 10000) == [(0, 10000)]
    assert parse_range_header(f"bytes={very}-", 10000) == []
    assert parse_range_header(f"bytes={very}-1", 10000) is None
    assert parse_range_header(f"bytes=-{very}", 10) == [(0, 10)]
    # Leading zeros do not make a number large.
    assert parse_range_header(f"bytes={'0' * 5000}5-{'0' * 40}7", 10000) == [(5, 8)]


def test_size_zero() -> None:
    # A non-zero suffix is satisfiable but selects the whole empty body: plain 200.
    assert parse_range_header("bytes=-1", 0) is None
    assert parse_range_header("bytes=-500", 0) is None
    assert parse_range_header("bytes=0-0,-1", 0) is None
    # Anything else is unsatisfiable: 416.
    assert parse_range_header("bytes=0-", 0) == []
    assert parse_range_header("bytes=0-0", 0) == []
    assert parse_range_header("bytes=-0", 0) == []
    assert parse_range_header("bytes=0-499,-0", 0) == []
    # Malformed is still malformed.
    assert parse_range_header("bytes=5-4", 0) is None
    assert parse_range_header("bytes=", 0) is None


def test_size_one() -> None:
    assert parse_range_header("bytes=0-0", 1) == [(0, 1)]
    assert parse_range_header("bytes=0-", 1) == [(0, 1)]
    assert parse_range_header("bytes=0-5", 1) == [(0, 1)]
    assert parse_range_header("bytes=-1", 1) == [(0, 1)]
    assert parse_range_header("bytes=-5", 1) == [(0, 1)]
    assert parse_range_header("bytes=1-", 1) == []
    assert parse_range_header("bytes=-0", 1) == []
    assert parse_range_header("bytes=0-0,-1", 1) == [(0, 1)]


def test_negative_size_rejected() -> None:
    with pytest.raises(ValueError):
        parse_range_header("bytes=0-1", -1)


@FAST
@given(st.text(max_size=60), st.integers(min_value=0, max_value=100))
def test_parser_never_crashes(header: str, size: int) -> None:
    result = parse_range_header(header, size)
    assert result is None or all(0 <= s < e <= size for s, e in result)


@FAST
@given(
    st.text(alphabet="bytes=-0123456789, \t", max_size=40),
    st.integers(min_value=0, max_value=50),
)
def test_parser_near_grammar_never_crashes(header: str, size: int) -> None:
    result = parse_range_header(header, size)
    assert result is None or all(0 <= s < e <= size for s, e in result)


# A spec is ("ab", a, b), ("a", a) or ("n", n); values may go past the content.
_pos = st.one_of(st.integers(min_value=0, max_value=80), st.integers(min_value=0, max_value=10**25))
_spec = st.one_of(
    st.tuples(st.just("ab"), _pos, _pos).map(lambda t: ("ab", min(t[1], t[2]), max(t[1], t[2]))),
    st.tuples(st.just("a"), _pos),
    st.tuples(st.just("n"), _pos),
)
_sep = st.sampled_from([",", ", ", " ,", " , ", "\t,", ",\t ", ",,", ", ,"])


def _render(spec: tuple) -> str:
    kind = spec[0]
    if kind == "ab":
        return f"{spec[1]}-{spec[2]}"
    if kind == "a":
        return f"{spec[1]}-"
    return f"-{spec[1]}"


def _expected_slice(content: bytes, spec: tuple) -> bytes | None:
    """The bytes a spec selects per RFC 9110, or None when unsatisfiable (independent of the code)."""
    kind = spec[0]
    if kind == "n":
        return content[-spec[1] :] if spec[1] > 0 else None
    a = spec[1]
    if a >= len(content):
        return None
    return content[a : spec[2] + 1] if kind == "ab" else content[a:]


def _covered(content: bytes, specs: list[tuple]) -> set[int]:
    """The positions the specs select (by slicing the content independently of the parser)."""
    size, positions = len(content), set()
    for spec in specs:
        if spec[0] == "n":
            positions |= set(range(max(size - spec[1], 0), size)) if spec[1] > 0 else set()
        elif spec[1] < size:
            positions |= set(range(spec[1], min(spec[2] + 1, size) if spec[0] == "ab" else size))
    return positions


@st.composite
def _header(draw: st.DrawFn) -> tuple[str, list[tuple]]:
    specs = draw(st.lists(_spec, min_size=1, max_size=8))
    seps = draw(st.lists(_sep, min_size=len(specs) - 1, max_size=len(specs) - 1))
    unit = draw(st.sampled_from(["bytes", "BYTES", "Bytes"]))
    lead = draw(st.sampled_from(["", " ", "\t", ", "]))
    body = _render(specs[0]) + "".join(sep + _render(s) for sep, s in zip(seps, specs[1:], strict=True))
    return f"{unit}={lead}{body}", specs


@FAST
@given(st.binary(max_size=64) | st.binary(min_size=0, max_size=1), _header())
def test_parse_matches_rfc_slices(content: bytes, header_specs: tuple[str, list[tuple]]) -> None:
    header, specs = header_specs
    result = parse_range_header(header, len(content))
    if not content:
        # Size 0: only a non-zero suffix is satisfiable, and it means "whole body" (None).
        has_suffix = any(s[0] == "n" and s[1] > 0 for s in specs)
        assert result == (None if has_suffix else [])
        return
    expected = [x for x in (_expected_slice(content, s) for s in specs) if x is not None]
    assert result is not None
    if not expected:
        assert result == []
        return
    # the same bytes as the slices, each once, as separated runs in ascending order
    assert all(0 <= start < end <= len(content) for start, end in result)
    assert all(a[1] < b[0] for a, b in pairwise(result))
    assert b"".join(content[start:end] for start, end in result) == b"".join(
        content[i:i + 1] for i in sorted(_covered(content, specs)))


@FAST
@given(
    st.binary(min_size=0, max_size=32),
    _header(),
    st.sampled_from(["5-4", "x", "-", "1-2-3", "+1-2", "1 - 2", "\u0663-4"]),
    st.integers(min_value=0, max_value=8),
)
def test_one_malformed_spec_spoils_header(
    content: bytes, header_specs: tuple[str, list[tuple]], bad: str, where: int
) -> None:
    header, _ = header_specs
    unit, _, rest = header.partition("=")
    elements = rest.split(",")
    elements.insert(min(where, len(elements)), bad)
    assert parse_range_header(f"{unit}={','.join(elements)}", len(content)) is None


# ---------------------------------------------------------------------------------------------------
# split_range


def test_split_range_examples() -> None:
    assert split_range(0, 0, 10) == []
    assert split_range(5, 5, 10) == []
    assert split_range(0, 10, 10) == [PieceRange(0, 0, 10)]
    assert split_range(3, 7, 10) == [PieceRange(0, 3, 4)]
    assert split_range(8, 25, 10) == [PieceRange(0, 8, 2), PieceRange(1, 0, 10), PieceRange(2, 0, 5)]
    assert split_range(10, 20, 10) == [PieceRange(1, 0, 10)]
    assert split_range(19, 21, 10) == [PieceRange(1, 9, 1), PieceRange(2, 0, 1)]
    assert split_range(0, 3, 1) == [PieceRange(0, 0, 1), PieceRange(1, 0, 1), PieceRange(2, 0, 1)]


@pytest.mark.parametrize(
    ("start", "end", "ps"), [(0, 1, 0), (0, 1, -1), (5, 4, 10), (-1, 4, 10), (0, -1, 10)]
)
def test_split_range_rejects(start: int, end: int, ps: int) -> None:
    with pytest.raises(ValueError):
        split_range(start, end, ps)


def test_piece_range_is_frozen() -> None:
    pr = PieceRange(1, 2, 3)
    with pytest.raises(AttributeError):
        pr.index = 5
    assert not hasattr(pr, "__dict__")  # slots


@st.composite
def _content_and_range(draw: st.DrawFn) -> tuple[bytes, int, int]:
    content = draw(st.binary(max_size=300))
    start = draw(st.integers(min_value=0, max_value=len(content)))
    end = draw(st.integers(min_value=start, max_value=len(content)))
    return content, start, end


@FAST
@given(_content_and_range(), st.integers(min_value=1, max_value=64))
def test_split_range_matches_slicing(cr: tuple[bytes, int, int], ps: int) -> None:
    content, start, end = cr
    pieces = split_range(start, end, ps)
    assert (
        b"".join(content[p.index * ps + p.offset : p.index * ps + p.offset + p.length] for p in pieces)
        == (content[start:end])
    )
    for i, p in enumerate(pieces):
        assert p.length > 0
        assert p.offset >= 0 and p.offset + p.length <= ps  # never crosses a piece boundary
        if i:
            assert p.index == pieces[i - 1].index + 1 and p.offset == 0
    assert sum(p.length for p in pieces) == end - start


# ---------------------------------------------------------------------------------------------------
# blocks


def test_blocks_per_piece() -> None:
    assert blocks_per_piece(10, 4) == 3
    assert blocks_per_piece(8, 4) == 2
    assert blocks_per_piece(1, 4) == 1
    assert blocks_per_piece(4 * 1024 * 1024, 1024 * 1024) == 4
    for bad in [(0, 4), (4, 0), (-1, 4), (4, -1)]:
        with pytest.raises(ValueError):
            blocks_per_piece(*bad)


def test_global_block_index() -> None:
    assert global_block_index(0, 0, 10, 4) == 0
    assert global_block_index(0, 2, 10, 4) == 2
    assert global_block_index(1, 0, 10, 4) == 3
    assert global_block_index(2, 1, 10, 4) == 7
    for bad in [(0, 3, 10, 4), (0, -1, 10, 4), (-1, 0, 10, 4)]:
        with pytest.raises(ValueError):
            global_block_index(*bad)


def test_block_span_examples() -> None:
    # Piece of 10 bytes, blocks of 4: [0,4) [4,8) [8,10)
    assert block_span(0, 0, 10, 10, 4) == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert block_span(0, 5, 1, 10, 4) == [(1, 4, 4)]
    assert block_span(3, 3, 2, 10, 4) == [(0, 0, 4), (1, 4, 4)]
    assert block_span(0, 9, 1, 10, 4) == [(2, 8, 2)]
    assert block_span(0, 4, 4, 10, 4) == [(1, 4, 4)]
    assert block_span(0, 4, 0, 10, 4) == []
    assert block_span(0, 0, 3, 3, 4) == [(0, 0, 3)]  # short last piece: block clipped at piece end


@pytest.mark.parametrize(
    "args",
    [
        (0, 0, 11, 10, 4),
        (0, 8, 3, 10, 4),
        (0, -1, 1, 10, 4),
        (0, 0, -1, 10, 4),
        (0, 0, 1, 10, 0),
        (-1, 0, 1, 10, 4),
    ],
)
def test_block_span_rejects(args: tuple[int, int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        block_span(*args)


@FAST
@given(
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=1, max_value=64),
    st.data(),
)
def test_block_span_covers_exactly(piece_len: int, block_size: int, data: st.DataObject) -> None:
    offset = data.draw(st.integers(min_value=0, max_value=piece_len))
    length = data.draw(st.integers(min_value=0, max_value=piece_len - offset))
    blocks = block_span(0, offset, length, piece_len, block_size)
    if length == 0:
        assert blocks == []
        return
    for k, bstart, blen in blocks:
        assert bstart == k * block_size
        assert blen == min((k + 1) * block_size, piece_len) - bstart > 0
        assert bstart + blen <= piece_len  # never crosses the piece end
    for (k1, s1, l1), (k2, s2, _) in pairwise(blocks):
        assert k2 == k1 + 1 and s2 == s1 + l1  # contiguous
    _, first_start, first_len = blocks[0]
    _, last_start, last_len = blocks[-1]
    # Covers the read, and minimally: the first block holds the first byte, the last one the last.
    assert first_start <= offset < first_start + first_len
    assert last_start <= offset + length - 1 < last_start + last_len
    assert len(blocks) <= blocks_per_piece(piece_len, block_size)


@FAST
@given(_content_and_range(), st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=32))
def test_range_to_blocks_end_to_end(cr: tuple[bytes, int, int], ps: int, bs: int) -> None:
    content, start, end = cr
    size = len(content)
    seen: list[int] = []
    out = b""
    for p in split_range(start, end, ps):
        piece = content[p.index * ps : (p.index + 1) * ps]
        for k, bstart, blen in block_span(p.index, p.offset, p.length, len(piece), bs):
            seen.append(global_block_index(p.index, k, ps, bs))
            block = piece[bstart : bstart + blen]
            assert len(block) == blen
            lo = max(p.offset, bstart) - bstart
            hi = min(p.offset + p.length, bstart + blen) - bstart
            out += block[lo:hi]
    assert out == content[start:end]
    assert seen == sorted(set(seen))  # distinct and increasing
    if size:
        max_piece = (size - 1) // ps
        assert all(i < (max_piece + 1) * blocks_per_piece(ps, bs) for i in seen)


# ---------------------------------------------------------------------------------------------------
# multipart/byteranges and Content-Range


def test_content_range() -> None:
    assert content_range(0, 500, 10000) == "bytes 0-499/10000"
    assert content_range(9999, 10000, 10000) == "bytes 9999-9999/10000"
    assert unsatisfied_content_range(10000) == "bytes */10000"
    for bad in [(0, 0, 10), (5, 4, 10), (-1, 4, 10), (0, 11, 10)]:
        with pytest.raises(ValueError):
            content_range(*bad)


def test_multipart_layout_exact() -> None:
    content = bytes(range(256)) * 40  # 10240 bytes
    size = 10000
    parts, closing, total = multipart_layout(
        [(0, 1), (9999, 10000)], size, "text/plain", "THIS_STRING_SEPARATES"
    )
    assert parts == [
        (
            b"--THIS_STRING_SEPARATES\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-0/10000\r\n\r\n",
            0,
            1,
        ),
        (
            b"\r\n--THIS_STRING_SEPARATES\r\nContent-Type: text/plain\r\n"
            b"Content-Range: bytes 9999-9999/10000\r\n\r\n",
            9999,
            10000,
        ),
    ]
    assert closing == b"\r\n--THIS_STRING_SEPARATES--\r\n"
    body = b"".join(h + content[s:e] for h, s, e in parts) + closing
    assert total == len(body)


@pytest.mark.parametrize(
    ("ranges", "ct", "boundary"),
    [
        ([], "text/plain", "b"),
        ([(0, 0)], "text/plain", "b"),
        ([(0, 11)], "text/plain", "b"),
        ([(0, 1)], "text/plain", ""),
        ([(0, 1)], "text/plain", "a" * 71),
        ([(0, 1)], "text/plain", "ends with space "),
        ([(0, 1)], "text/plain", "bad\r\nboundary"),
        ([(0, 1)], "text/plain\r\nX-Evil: 1", "b"),
        ([(0, 1)], "text/\u20ac", "b"),  # not latin-1
    ],
)
def test_multipart_layout_rejects(ranges: list[tuple[int, int]], ct: str, boundary: str) -> None:
    with pytest.raises(ValueError):
        multipart_layout(ranges, 10, ct, boundary)


@st.composite
def _content_and_ranges(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    content = draw(st.binary(min_size=1, max_size=200))
    n = len(content)
    ranges = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        start = draw(st.integers(min_value=0, max_value=n - 1))
        end = draw(st.integers(min_value=start + 1, max_value=n))
        ranges.append((start, end))
    return content, ranges


@FAST
@given(
    _content_and_ranges(),
    st.sampled_from(["application/octet-stream", "text/plain; charset=utf-8", "image/png"]),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=70),
)
def test_multipart_total_matches_body(
    cr: tuple[bytes, list[tuple[int, int]]], ct: str, boundary: str
) -> None:
    content, ranges = cr
    delimiter = f"\r\n--{boundary}".encode()
    assume(delimiter not in b"\r\n" + content)  # a real boundary is random enough never to collide
    size = len(content)
    parts, closing, total = multipart_layout(ranges, size, ct, boundary)
    body = b"".join(h + content[s:e] for h, s, e in parts) + closing
    assert total == len(body)
    assert [(s, e) for _, s, e in parts] == ranges
    # Parse it back: split on the delimiter (the first has no leading CRLF) and check each part.
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    chunks = (b"\r\n" + body).split(delimiter)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    for chunk, (start, end) in zip(chunks[1:-1], ranges, strict=True):
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        assert sep
        assert head == f"\r\nContent-Type: {ct}\r\nContent-Range: {content_range(start, end, size)}".encode()
        assert payload == content[start:end]


# ---------------------------------------------------------------------------------------------------
# If-Range and If-None-Match

LM = int(datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("if_range", "expected"),
    [
        (None, True),
        ('"abc"', True),
        (' "abc" ', True),
        ('"abd"', False),
        ('W/"abc"', False),  # weak never matches
        ('"ABC"', False),
        ("abc", False),  # neither a tag nor a date
        ("", False),
        ("Wed, 21 Oct 2015 07:28:00 GMT", True),
        ("Wed, 21 Oct 2015 07:28:01 GMT", False),
        ("Wed, 21 Oct 2015 07:27:59 GMT", False),
        ("Wed, 21 Oct 2015 09:28:00 +0200", True),
        ("Wed, 21 Oct 2015 07:28:00 -0000", True),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", True),  # obsolete RFC 850 form
        ("Wed, 32 Oct 2015 07:28:00 GMT", False),
        ("Wed, 21 Oct 99999 07:28:00 GMT", False),
        ("not a date", False),
    ],
)
def test_if_range(if_range: str | None, expected: bool) -> None:
    assert if_range_allows(if_range, '"abc"', LM) is expected


def test_if_range_weak_current_etag() -> None:
    assert if_range_allows('W/"abc"', 'W/"abc"', LM) is False
    assert if_range_allows('"abc"', 'W/"abc"', LM) is False


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)))
@FAST
def test_if_range_date_round_trip(when: datetime) -> None:
    when = when.replace(microsecond=0)
    epoch = int(when.timestamp())
    header = format_datetime(when, usegmt=True)
    assert if_range_allows(header, '"x"', epoch)
    assert not if_range_allows(header, '"x"', epoch + 1)
    assert not if_range_allows(header, '"x"', epoch - 1)


@FAST
@given(st.text(max_size=40))
def test_if_range_never_crashes(value: str) -> None:
    assert if_range_allows(value, '"abc"', LM) in (True, False)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("*", True),
        (" * ", True),
        ('"abc"', True),
        ('W/"abc"', True),  # weak comparison
        ('"x", "abc"', True),
        ('"x",W/"abc" ,"y"', True),
        ('"x"', False),
        ('"x", "y"', False),
        ('"a,b", "c"', False),  # comma inside a tag is part of the tag
        ("", False),
        ("abc", False),  # unquoted: not an entity tag
        ('"ABC"', False),
    ],
)
def test_etag_matches(header: str, expected: bool) -> None:
    assert etag_matches(header, '"abc"') is expected


def test_etag_matches_comma_in_tag_and_weak_current() -> None:
    assert etag_matches('"a,b"', '"a,b"')
    assert etag_matches('"abc"', 'W/"abc"')
    assert etag_matches('W/"abc"', 'W/"abc"')


@FAST
@given(st.text(max_size=40))
def test_etag_matches_never_crashes(value: str) -> None:
    assert etag_matches(value, '"abc"') in (True, False)
