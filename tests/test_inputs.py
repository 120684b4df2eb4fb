"""What a hostile client sends before any view runs: JSON bodies too large or too deep, bodies that are not
JSON, paths that are not UTF-8 or hold control characters, headers over gunicorn's limits.

In-process through the app (WSGI environ as a server builds it), and against a real gunicorn where the
behaviour is gunicorn's (its raw request target in ``RAW_URI``, its own answers to oversized headers).
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket

import pytest
import requests

from storage_core.settings import Settings
from tests.conftest import make_bucket, put
from tests.support.servers import GunicornServer

MiB = 1024 * 1024
CHECKSUM = "a" * 64
AVAILABILITY = "/api/v1/files/availability"  # a JSON route of both profiles
PROBLEM_JSON = "application/problem+json"


def assert_problem(response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.headers["Content-Type"] == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body["status"] == status and body["code"] == code, body
    assert mentions in body["detail"], body


class UnreadableStream(io.RawIOBase):
    """A request body that must not be read at all."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise AssertionError("the body was read")


class CountingStream(io.RawIOBase):
    """An endless request body (``[[[[...``) that counts what was read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        buffer[:] = b"[" * len(buffer)
        self.read_bytes += len(buffer)
        return len(buffer)


# ---- point 12: JSON bodies --------------------------------------------------------------------------------

def test_json_over_the_limit_is_413_from_its_content_length_without_reading_it(client):
    response = client.post(AVAILABILITY, content_type="application/json",
                           environ_overrides={"wsgi.input": UnreadableStream(), "CONTENT_LENGTH": str(200 * MiB)})
    assert_problem(response, 413, "EntityTooLarge", str(MiB))


def test_chunked_json_is_cut_at_the_limit(client):
    stream = CountingStream()
    # no Content-Length, and the server says it has decoded the chunked framing (as gunicorn does)
    response = client.post(AVAILABILITY, content_type="application/json",
                           environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True,
                                              "HTTP_TRANSFER_ENCODING": "chunked"})
    assert_problem(response, 413, "EntityTooLarge")
    assert stream.read_bytes <= MiB + 64 * 1024, stream.read_bytes


def test_the_json_limit_is_a_setting(settings, engine, auth):
    from storage_core.app import create_app
    from tests.conftest import make_container

    small = dataclasses.replace(settings, max_json_bytes=1000)
    app = create_app(settings=small, container=make_container(small, engine, frozenset({"storage"})))
    client = app.test_client()
    body = json.dumps({"checksums": [CHECKSUM] * 14}).encode()
    over = body[:-2] + b" " * (1001 - len(body)) + b"]}"
    assert len(over) == 1001
    assert_problem(client.post(AVAILABILITY, data=over, content_type="application/json", headers=auth.admin),
                   413, "EntityTooLarge", "1000 bytes")
    at_limit = over[:-3] + b"]}"
    assert client.post(AVAILABILITY, data=at_limit, content_type="application/json",
                       headers=auth.admin).status_code == 200


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_json_nested_deeper_than_32_is_400(client, depth):
    body = '{"checksums": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    assert_problem(client.post(AVAILABILITY, data=body, content_type="application/json"), 400, "InvalidArgument",
                   "nested deeper than 32")


def test_json_nested_32_deep_is_parsed(client):
    body = '{"checksums": ' + "[" * 31 + "]" * 31 + "}"  # 32 levels: the object and 31 arrays
    response = client.post(AVAILABILITY, data=body, content_type="application/json")
    assert response.status_code == 400
    assert "nested" not in response.json["detail"]  # the schema's own answer: not a list of checksums


def test_brackets_inside_strings_are_not_nesting(client):
    body = json.dumps({"checksums": ["[" * 200 + "{" * 200 + '\\"' + "]" * 3]})
    response = client.post(AVAILABILITY, data=body, content_type="application/json")
    assert response.status_code == 400 and "nested" not in response.json["detail"], response.json


@pytest.mark.parametrize(("content_type", "data"), [
    ("application/x-www-form-urlencoded", "checksums=" + CHECKSUM),
    ("multipart/form-data; boundary=b", f'--b\r\nContent-Disposition: form-data; name="checksums"\r\n\r\n{CHECKSUM}'
                                        "\r\n--b--\r\n"),
    ("text/plain", json.dumps({"checksums": [CHECKSUM]})),
    (None, json.dumps({"checksums": [CHECKSUM]})),
])
def test_a_body_that_is_not_json_on_a_json_route_is_415(client, content_type, data):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(AVAILABILITY, data=data.encode(), headers=headers)
    assert_problem(response, 415, "UnsupportedMediaType", "application/json")


def test_json_media_types_and_an_empty_body_are_accepted(client, storage, local_location):
    body = json.dumps({"checksums": [CHECKSUM]})
    for content_type in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        assert client.post(AVAILABILITY, data=body, content_type=content_type).status_code == 200, content_type
    make_bucket(storage)
    put(storage, "bucket", "k", b"x")
    if "storage" in client.application.extensions["profiles"]:
        # presign takes an optional body: none at all is its defaults
        assert client.post("/api/v1/buckets/bucket/objects/k/presign").status_code in (200, 501)


def test_raw_uploads_are_not_json_routes(client, storage, local_location):
    if "storage" not in client.application.extensions["profiles"]:
        pytest.skip("uploads are storage-only")
    make_bucket(storage)
    nested = b"[" * 100_000 + b"]" * 100_000
    response = client.put("/api/v1/buckets/bucket/objects/data.json", data=nested, content_type="application/json")
    assert response.status_code == 201, response.json
    assert client.get("/api/v1/buckets/bucket/objects/data.json").get_data() == nested


# ---- point 13: paths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/api/v1/buckets/bucket/objects/%ff",
    "/api/v1/buckets/bucket/objects/a%fe%ffb",
    "/api/v1/buckets/bucket/objects/%c3",  # a truncated two-byte sequence
    "/api/v1/buckets/bu%ffcket/objects/k",
    "/api/v1/buckets/bu%ffcket/read-quota",
])
def test_paths_that_are_not_utf8_are_400_not_a_replacement_character(client, storage, local_location, path):
    make_bucket(storage)
    put(storage, "bucket", "\ufffd", b"the object whose key is U+FFFD")
    assert_problem(client.get(path), 400, "InvalidArgument", "UTF-8")


def test_a_key_of_a_replacement_character_is_its_own_key(client, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "\ufffd", b"replacement")
    response = client.get("/api/v1/buckets/bucket/objects/%EF%BF%BD")
    assert response.status_code == 200 and response.get_data() == b"replacement"


def test_query_values_that_are_not_utf8_are_400(client, storage):
    make_bucket(storage)
    assert_problem(client.get("/api/v1/buckets/bucket/read-quota?year_month=%ff"), 400, "InvalidArgument",
                   "UTF-8")


@pytest.mark.parametrize("key", ["a%0ab", "%0d%0aX-Injected:%201", "tab%09", "del%7f", "%00"])
def test_control_characters_in_a_key_are_400_problems(client, storage, local_location, key):
    make_bucket(storage)
    for method in ("GET", "HEAD", "DELETE", "PUT"):
        response = client.open(f"/api/v1/buckets/bucket/objects/{key}", method=method, data=b"x")
        assert response.status_code == 400, (method, response.status_code)
        if method != "HEAD":
            assert_problem(response, 400, "InvalidArgument", "control characters")


@pytest.fixture
def one_worker(settings: Settings, storage, local_location):
    make_bucket(storage)
    put(storage, "bucket", "k", b"0123456789")
    server = GunicornServer(settings, workers=1)
    yield server
    server.stop()


def raw_request(server: GunicornServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.slow
def test_gunicorn_paths_headers_and_bodies(one_worker: GunicornServer, auth):
    """Over a real gunicorn: raw invalid UTF-8 and control characters in the path, a Range header over its field
    size limit, a form body and a chunked JSON body over the limit: each a problem+json."""
    server = one_worker
    for path, mentions in [("/api/v1/buckets/bucket/objects/%ff", "UTF-8"),
                           ("/api/v1/buckets/bucket/objects/%fe", "UTF-8"),
                           ("/api/v1/buckets/bucket/objects/a%0ab", "control characters")]:
        status, headers, body = raw_request(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                            .encode())
        assert status == 400 and headers["content-type"] == PROBLEM_JSON, (path, status, body)
        assert mentions in json.loads(body)["detail"]

    huge_range = "bytes=" + ",".join(f"{i}-{i}" for i in range(3000))
    assert len(huge_range) > 8190
    response = requests.get(f"{server.url}/api/v1/buckets/bucket/objects/k", headers={"Range": huge_range},
                            timeout=10)
    assert response.status_code == 431, response.text
    assert response.headers["Content-Type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["status"] == 431 and problem["code"] == "RequestHeaderFieldsTooLarge", problem
    assert "<html>" not in response.text
    assert requests.get(f"{server.url}/api/v1/buckets/bucket/objects/k", timeout=10).status_code == 200

    form = requests.post(f"{server.url}{AVAILABILITY}", data={"checksums": CHECKSUM}, headers=server.admin,
                         timeout=10)
    assert form.status_code == 415 and form.headers["Content-Type"] == PROBLEM_JSON, form.text

    def chunks():
        yield b'{"checksums": ["'
        for _ in range(2 * 1024):
            yield b"a" * 1024

    chunked = requests.post(f"{server.url}{AVAILABILITY}", data=chunks(),
                            headers={**server.admin, "Content-Type": "application/json"}, timeout=30)
    assert chunked.status_code == 413 and chunked.json()["code"] == "EntityTooLarge", chunked.text


@pytest.mark.slow
@pytest.mark.profile("storage")
def test_gunicorns_refusals_on_the_s3_listener_are_s3_xml(settings: Settings, storage, local_location):
    from tests.support.servers import free_port

    s3_port = free_port()
    server = GunicornServer(settings, workers=1, extra_env={"STORAGE_S3_BIND": f"127.0.0.1:{s3_port}"})
    try:
        huge = "x" * 9000
        s3 = requests.get(f"http://127.0.0.1:{s3_port}/bucket/k", headers={"X-Big": huge}, timeout=10)
        assert s3.status_code == 400 and s3.headers["Content-Type"] == "application/xml", s3.text
        assert "<Code>RequestHeaderSectionTooLarge</Code>" in s3.text
        native = requests.get(f"{server.url}/api/v1/buckets/bucket/objects/k", headers={"X-Big": huge}, timeout=10)
        assert native.status_code == 431 and native.headers["Content-Type"] == PROBLEM_JSON
    finally:
        server.stop()
