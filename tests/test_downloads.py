"""Downloads over HTTP (both profiles): ranges against Python slicing, conditional requests, headers."""

from __future__ import annotations

import email.utils
import hashlib
import os
import re

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from storage_core.models import ReadRecord
from tests.conftest import KiB, make_bucket, put

PIECE = 64 * KiB


def records(storage) -> list[ReadRecord]:
    with storage.session_factory()() as session:
        return list(session.scalars(select(ReadRecord).order_by(ReadRecord.id)))


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    boundary = re.search(r"boundary=(\S+)", content_type).group(1).encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        content_range = re.search(rb"Content-Range: (bytes \S+)", head).group(1).decode()
        parts.append((content_range, data[:-2]))  # the CRLF before the next delimiter
    return parts


@pytest.fixture
def objects(storage, local_location):
    """Objects of the sizes that matter: empty, one byte, one piece, several pieces with a short tail."""
    make_bucket(storage)
    contents = {size: os.urandom(size) for size in (0, 1, PIECE, 3 * PIECE + 100)}
    for size, data in contents.items():
        put(storage, "bucket", f"obj-{size}", data)
    return contents


spec = st.one_of(
    st.tuples(st.integers(0, 3 * PIECE + 200), st.integers(0, 3 * PIECE + 200)).map(
        lambda t: f"{min(t)}-{max(t)}"),
    st.integers(0, 3 * PIECE + 200).map(lambda a: f"{a}-"),
    st.integers(0, 3 * PIECE + 200).map(lambda n: f"-{n}"),
)


def expected_slices(specs: list[str], data: bytes) -> list[tuple[int, int]]:
    """RFC 9110 semantics computed independently of the service: the bytes the satisfiable ranges cover,
    as maximal runs in ascending order (overlapping and adjacent ranges are served once)."""
    size = len(data)
    out = []
    for s in specs:
        first, _, last = s.partition("-")
        if first == "":
            n = int(last)
            if n > 0 and size > 0:
                out.append((max(size - n, 0), size))
        elif int(first) < size:
            out.append((int(first), size if last == "" else min(int(last) + 1, size)))
    covered = sorted({i for start, end in out for i in range(start, end)})
    runs: list[tuple[int, int]] = []
    for i in covered:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.sampled_from([0, 1, PIECE, 3 * PIECE + 100]), specs=st.lists(spec, min_size=1, max_size=4))
def test_ranges_match_python_slicing(client, objects, size, specs):
    data = objects[size]
    response = client.get(f"/api/v1/buckets/bucket/objects/obj-{size}", headers={"Range": "bytes=" + ",".join(specs)})
    expected = expected_slices(specs, data)
    if size == 0 and any(s.startswith("-") and int(s[1:]) > 0 for s in specs):
        assert response.status_code == 200 and response.data == b""
    elif not expected:
        assert response.status_code == 416
        assert response.headers["Content-Range"] == f"bytes */{size}"
    elif len(expected) == 1:
        start, end = expected[0]
        assert response.status_code == 206
        assert response.data == data[start:end]
        assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert response.headers["Content-Length"] == str(end - start)
    else:
        assert response.status_code == 206
        assert response.headers["Content-Length"] == str(len(response.data))
        parts = parse_multipart(response.data, response.headers["Content-Type"])
        assert parts == [(f"bytes {a}-{b - 1}/{size}", data[a:b]) for a, b in expected]


def test_charge_is_the_sum_of_the_ranges(client, storage, objects):
    size = 3 * PIECE + 100
    client.get(f"/api/v1/buckets/bucket/objects/obj-{size}", headers={"Range": "bytes=0-9,-5,100-199"})
    client.get(f"/api/v1/buckets/bucket/objects/obj-{size}", headers={"Range": f"bytes={PIECE - 3}-{PIECE + 2}"})
    client.get(f"/api/v1/buckets/bucket/objects/obj-{size}")
    assert [r.read_size for r in records(storage)] == [115, 6, size]


def test_free_answers_charge_nothing(client, storage, objects):
    url = f"/api/v1/buckets/bucket/objects/obj-{PIECE}"
    full = client.get(url)
    etag = full.headers["ETag"]
    assert client.head(url).status_code == 200
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"Range": f"bytes={PIECE}-"}).status_code == 416
    assert client.get("/api/v1/buckets/bucket/objects/obj-0").status_code == 200  # empty: nothing to charge
    assert [r.read_size for r in records(storage)] == [PIECE]


def test_head_has_the_headers_of_get_and_no_body(client, objects):
    url = f"/api/v1/buckets/bucket/objects/obj-{PIECE}"
    get, head = client.get(url), client.head(url)
    assert head.data == b""
    for name in ("Content-Length", "ETag", "Last-Modified", "Content-Type", "Accept-Ranges",
                 "Content-Disposition", "X-Content-Type-Options"):
        assert head.headers[name] == get.headers[name], name
    ranged = client.head(url, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.headers["Content-Length"] == "10"


def test_download_headers(client, storage, local_location):
    make_bucket(storage)
    view = put(storage, "bucket", "docs/résumé 2026.pdf", b"%PDF-", content_type="application/pdf")
    response = client.get("/api/v1/buckets/bucket/objects/docs/résumé 2026.pdf")
    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{view["checksum"]}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_ 2026.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202026.pdf")
    modified = email.utils.parsedate_to_datetime(response.headers["Last-Modified"])
    assert abs(modified.timestamp() - view["created_at"].timestamp()) < 1

    inline = client.get(f"/api/v1/files/{view['checksum']}/download?inline=true")
    assert inline.headers["Content-Disposition"].startswith("inline;")
    put(storage, "bucket", "page.html", b"<script>", content_type="text/html")
    html = hashlib.sha256(b"<script>").hexdigest()
    # a type that could run script in our origin is never shown inline
    assert client.get(f"/api/v1/files/{html}/download?inline=true").headers["Content-Disposition"].startswith(
        "attachment;")


def test_conditional_requests(client, objects):
    url = f"/api/v1/buckets/bucket/objects/obj-{PIECE}"
    first = client.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    # If-None-Match wins over If-Modified-Since
    assert client.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}).status_code == 200
    not_modified = client.get(url, headers={"If-None-Match": etag})
    assert not_modified.data == b"" and not_modified.headers["ETag"] == etag


def test_if_range(client, objects):
    url = f"/api/v1/buckets/bucket/objects/obj-{PIECE}"
    etag = client.head(url).headers["ETag"]
    modified = client.head(url).headers["Last-Modified"]
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": modified}).status_code == 206
    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and len(stale.data) == PIECE
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": f"W/{etag}"}).status_code == 200


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=abc", "pages=0-1", "bytes=", "bytes=--1", "bytes=1-2-3"])
def test_malformed_range_is_ignored(client, objects, header):
    response = client.get(f"/api/v1/buckets/bucket/objects/obj-{PIECE}", headers={"Range": header})
    assert response.status_code == 200 and response.data == objects[PIECE]


def test_download_by_checksum_in_several_buckets(client, storage, local_location):
    make_bucket(storage, "first")
    make_bucket(storage, "second")
    data = b"shared content"
    checksum = put(storage, "first", "a", data)["checksum"]
    put(storage, "second", "b", data)
    ambiguous = client.get(f"/api/v1/files/{checksum}/download")
    assert ambiguous.status_code == 409 and ambiguous.json["code"] == "Conflict"
    assert ambiguous.json["buckets"] == ["first", "second"]
    chosen = client.get(f"/api/v1/files/{checksum}/download?bucket=second")
    assert chosen.status_code == 200 and chosen.data == data
    assert chosen.headers["Content-Disposition"].startswith('attachment; filename="b"')
    assert [(r.object_name, r.read_size) for r in records(storage)] == [("b", len(data))]
    assert client.get(f"/api/v1/files/{checksum}/download?bucket=third").status_code == 404


def test_not_found_and_bad_checksum(client, storage, local_location):
    make_bucket(storage)
    assert client.get("/api/v1/buckets/bucket/objects/missing").json["code"] == "NotFound"
    assert client.get("/api/v1/buckets/missing/objects/k").status_code == 404
    assert client.get(f"/api/v1/files/{'0' * 64}/download").status_code == 404
    bad = client.get("/api/v1/files/XYZ/download")
    assert bad.status_code == 400 and bad.json["code"] == "InvalidArgument"
    assert client.get(f"/api/v1/files/{'0' * 64}/download?inline=perhaps").status_code == 400


def test_availability(client, storage, local_location, tmp_path):
    storage.location_service().create({"name": "tape", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(tmp_path / "tape")}})
    make_bucket(storage, locations=["tape"])
    make_bucket(storage, "both", locations=["hot", "tape"])
    cold = put(storage, "bucket", "cold", b"cold")["checksum"]
    hot = put(storage, "both", "hot", b"hot")["checksum"]
    unknown = "1" * 64
    response = client.post("/api/v1/files/availability", json={"checksums": [cold, hot, unknown]})
    assert response.status_code == 200
    assert response.json == [
        {"checksum": cold, "available": True, "tier": "cold", "state": "available", "expires_at": None},
        {"checksum": hot, "available": True, "tier": "hot", "state": "available", "expires_at": None},
        {"checksum": unknown, "available": False, "tier": None, "state": "unknown", "expires_at": None},
    ]
    too_many = client.post("/api/v1/files/availability", json={"checksums": [unknown] * 1001})
    assert too_many.status_code == 400
    assert client.post("/api/v1/files/availability", json={"checksums": ["nope"]}).status_code == 400
    assert client.post("/api/v1/files/availability", json={}).status_code == 400


def test_read_records_count_matches(client, storage, objects):
    for _ in range(3):
        client.get("/api/v1/buckets/bucket/objects/obj-1")
    with storage.session_factory()() as session:
        assert session.scalar(select(func.count()).select_from(ReadRecord)) == 3


def test_if_match_and_if_unmodified_since_fail_with_412(client, storage, local_location):
    make_bucket(storage)
    stored = put(storage, "bucket", "k", b"0123456789")
    url = "/api/v1/buckets/bucket/objects/k"
    etag = stored["etag"]
    assert client.get(url, headers={"If-Match": etag}).data == b"0123456789"
    assert client.get(url, headers={"If-Match": f'"nope", {etag}'}).status_code == 200
    assert client.get(url, headers={"If-Match": "*"}).status_code == 200
    for headers in ({"If-Match": '"nope"'}, {"If-Match": f"W/{etag}"},  # If-Match compares strongly
                    {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}):
        refused = client.get(url, headers=headers)
        assert refused.status_code == 412 and refused.json["code"] == "PreconditionFailed", headers
        assert client.head(url, headers=headers).status_code == 412
    assert client.get(url, headers={"If-Unmodified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}).status_code == 200
    # If-Match wins over If-Unmodified-Since; an unparsable date is ignored
    assert client.get(url, headers={"If-Match": etag,
                                    "If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    assert client.get(url, headers={"If-Unmodified-Since": "not a date"}).status_code == 200
    quota = client.get("/api/v1/buckets/bucket/read-quota").json
    assert quota["consumed_size"] == 10 * 6  # the 412s were free


def test_if_range_date_is_ignored_when_the_object_was_replaced_within_its_second(client, storage, local_location):
    make_bucket(storage)
    url = "/api/v1/buckets/bucket/objects/k"
    put(storage, "bucket", "k", b"old bytes!")
    first = client.get(url)
    last_modified = first.headers["Last-Modified"]
    put(storage, "bucket", "k", b"NEW BYTES?")  # within the same second, most likely
    second = client.get(url)
    resumed = client.get(url, headers={"Range": "bytes=5-", "If-Range": last_modified})
    if second.headers["Last-Modified"] == last_modified:
        # a resuming client would stitch old and new bytes: the whole new body instead
        assert resumed.status_code == 200 and resumed.data == b"NEW BYTES?"
    else:
        assert resumed.status_code == 200  # the date no longer matches either
    # an object whose Last-Modified is strong honours the date
    put(storage, "bucket", "fresh", b"0123456789")
    fresh = client.get("/api/v1/buckets/bucket/objects/fresh")
    ranged = client.get("/api/v1/buckets/bucket/objects/fresh",
                        headers={"Range": "bytes=5-", "If-Range": fresh.headers["Last-Modified"]})
    assert ranged.status_code == 206 and ranged.data == b"56789"
