"""Locations and buckets over HTTP (storage profile), and bad input answered 400 with a code, never 500."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import make_bucket

pytestmark = pytest.mark.profile("storage")


def test_location_lifecycle_hides_secrets(client, s3_server, s3_bucket_name):
    config = s3_server.config(s3_bucket_name, secret_key="s3cr3t-value")
    created = client.post("/api/v1/storage-locations", json={
        "name": "archive", "plugin": "s3", "tier": "cold", "priority": 3, "config": config})
    assert created.status_code == 201, created.json
    body = created.json
    assert body["tier"] == "cold" and body["priority"] == 3 and body["enabled"] is True
    assert "secret_key" not in body["config"] and body["config"]["bucket"] == s3_bucket_name
    assert body["used_size"] == 0 and body["file_count"] == 0
    assert "secret_key" not in client.get("/api/v1/storage-locations/archive").json["config"]
    assert "s3cr3t-value" not in client.get("/api/v1/storage-locations").get_data(as_text=True)

    patched = client.patch("/api/v1/storage-locations/archive", json={"priority": 0, "enabled": False,
                                                                     "config": {"prefix": "p"}})
    assert patched.status_code == 200
    assert patched.json["priority"] == 0 and patched.json["enabled"] is False
    assert patched.json["config"]["prefix"] == "p/"  # the secret was kept by the merge
    assert client.post("/api/v1/storage-locations", json={
        "name": "archive", "plugin": "s3", "config": config}).status_code == 409
    assert client.delete("/api/v1/storage-locations/archive").status_code == 204
    assert client.get("/api/v1/storage-locations/archive").status_code == 404


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_body(config: dict, **fields) -> dict:
    return {"name": "archive", "plugin": "s3", "tier": "cold", "config": config, **fields}


@pytest.mark.parametrize("case", ["unreachable endpoint", "missing bucket", "refused credentials"])
def test_an_s3_location_that_cannot_serve_is_refused_with_the_reason(client, s3_server, s3_bucket_name, case,
                                                                    request):
    if case == "unreachable endpoint":
        config, reason = s3_server.config(s3_bucket_name, endpoint=f"127.0.0.1:{unused_port()}"), "refused"
    elif case == "missing bucket":
        config, reason = s3_server.config(s3_bucket_name, create_bucket=False), f"bucket {s3_bucket_name} missing"
    else:
        strict = request.getfixturevalue("authenticating_s3_server")
        config, reason = s3_server.config(s3_bucket_name, endpoint=strict.endpoint), "AccessDenied"

    refused = client.post("/api/v1/storage-locations", json=s3_body(config))
    assert refused.status_code == 400, refused.json
    assert refused.json["code"] == "InvalidArgument"
    assert "cannot be used" in refused.json["detail"] and reason in refused.json["detail"], refused.json
    assert client.get("/api/v1/storage-locations/archive").status_code == 404

    unchecked = client.post("/api/v1/storage-locations", json=s3_body(config, check=False))
    assert unchecked.status_code == 201, unchecked.json
    assert "check" not in unchecked.json


def test_a_reachable_s3_location_is_added_and_its_bucket_made(client, s3_server, s3_bucket_name):
    import boto3

    created = client.post("/api/v1/storage-locations", json=s3_body(s3_server.config(s3_bucket_name)))
    assert created.status_code == 201, created.json
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_server.endpoint}", aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.head_bucket(Bucket=s3_bucket_name)  # made when the location was added, not at the first upload


def test_a_config_change_is_checked_too(client, s3_server, s3_bucket_name):
    assert client.post("/api/v1/storage-locations", json=s3_body(s3_server.config(s3_bucket_name))).status_code == 201
    moved = {"endpoint": f"127.0.0.1:{unused_port()}"}
    refused = client.patch("/api/v1/storage-locations/archive", json={"config": moved})
    assert refused.status_code == 400 and "refused" in refused.json["detail"], refused.json
    assert client.get("/api/v1/storage-locations/archive").json["config"]["endpoint"] == s3_server.endpoint
    unchecked = client.patch("/api/v1/storage-locations/archive", json={"config": moved, "check": False})
    assert unchecked.status_code == 200 and unchecked.json["config"]["endpoint"] == moved["endpoint"]


def test_a_local_root_that_cannot_be_made_is_refused(client, tmp_path):
    (tmp_path / "a-file").write_bytes(b"")
    refused = client.post("/api/v1/storage-locations", json={
        "name": "hot", "plugin": "local", "config": {"root": str(tmp_path / "a-file" / "root")}})
    assert refused.status_code == 400 and "cannot be created" in refused.json["detail"], refused.json


def test_storage_admin_checks_an_s3_location_unless_told_not_to(tmp_path, s3_bucket_name):
    from tests.test_cli import run_admin

    env = {"STORAGE_DATA_DIR": str(tmp_path / "var"), "STORAGE_DATABASE_URL": ""}
    assert run_admin(env, "db", "upgrade").returncode == 0
    config = json.dumps({"endpoint": f"127.0.0.1:{unused_port()}", "access_key": "k", "secret_key": "s",
                         "bucket": s3_bucket_name, "secure": False})
    refused = run_admin(env, "location", "add", "archive", "--plugin", "s3", "--config", config)
    assert refused.returncode == 2, refused.stderr
    assert "cannot be used" in refused.stderr and "refused" in refused.stderr and "Traceback" not in refused.stderr
    added = run_admin(env, "location", "add", "archive", "--plugin", "s3", "--config", config, "--no-check")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["name"] == "archive"


def test_bucket_lifecycle(client, storage, local_location):
    created = client.post("/api/v1/buckets", json={"name": "my-bucket", "locations": ["hot"],
                                                   "charged_read_quota": 10})
    assert created.status_code == 201
    body = created.json
    assert body["visibility"] == "private" and body["locations"] == ["hot"]
    assert body["free_read_quota"] == storage.settings().free_read_quota
    assert client.post("/api/v1/buckets", json={"name": "my-bucket"}).status_code == 409
    patched = client.patch("/api/v1/buckets/my-bucket", json={"visibility": "public-read", "locations": []})
    assert patched.json["visibility"] == "public-read" and patched.json["locations"] == []
    assert [b["name"] for b in client.get("/api/v1/buckets").json["buckets"]] == ["my-bucket"]
    assert client.delete("/api/v1/buckets/my-bucket").status_code == 204


CHECKSUM = "a" * 64

BAD_REQUESTS = [
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "nope", "config": {}}, "unknown plugin"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "local", "config": {}}, "root"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "local", "config": {"root": "relative"}}, "root"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "local", "config": {"root": "/a", "x": 1}}, "x"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "s3", "config": {"endpoint": "h"}}, "bucket"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "local", "tier": "warm",
                                           "config": {"root": "/a"}}, "tier"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "local", "priority": -1,
                                           "config": {"root": "/a"}}, "priority"),
    ("POST", "/api/v1/storage-locations", {"name": "../x", "plugin": "local", "config": {"root": "/a"}}, "name"),
    ("POST", "/api/v1/storage-locations", {"name": "x", "plugin": "local", "config": "nope"}, "config"),
    ("POST", "/api/v1/buckets", {"name": "Bad_Name"}, "name"),
    ("POST", "/api/v1/buckets", {"name": "ab"}, "name"),
    ("POST", "/api/v1/buckets", {"name": "xn--abc"}, "'xn--' (reserved by S3)"),
    ("POST", "/api/v1/buckets", {"name": "abc-s3alias"}, "'-s3alias' (reserved by S3)"),
    ("POST", "/api/v1/storage-locations", {"name": "ho\nt", "plugin": "local", "config": {"root": "/a"}},
     "location names"),
    ("POST", "/api/v1/buckets", {"name": "192.168.1.1"}, "IP"),
    ("POST", "/api/v1/buckets", {"name": "okay", "charged_read_quota": -5}, "charged_read_quota"),
    ("POST", "/api/v1/buckets", {"name": "okay", "visibility": "world"}, "visibility"),
    ("POST", "/api/v1/buckets", {"name": "okay", "locations": ["nowhere"]}, "nowhere"),
    ("POST", "/api/v1/buckets", {"name": "okay", "unexpected": 1}, "unexpected"),
    ("PATCH", "/api/v1/buckets/bucket", {"charged_read_quota": "lots"}, "charged_read_quota"),
    ("GET", "/api/v1/buckets/bucket/objects?limit=0", None, "limit"),
    ("GET", "/api/v1/buckets/bucket/objects?limit=abc", None, "limit"),
    ("GET", "/api/v1/buckets/bucket/objects?cursor=%%%", None, "cursor"),
    ("GET", "/api/v1/files/NOTAHASH", None, "checksum"),
    ("POST", f"/api/v1/files/{CHECKSUM}/copies", {}, "location"),
]


@pytest.mark.parametrize("method,path,body,mentions", BAD_REQUESTS)
def test_bad_input_is_400_with_a_code(client, storage, local_location, method, path, body, mentions):
    make_bucket(storage)
    response = client.open(path, method=method, json=body)
    assert response.status_code == 400, response.json
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json["code"] == "InvalidArgument"
    assert response.json["status"] == 400
    assert mentions in response.json["detail"]


def test_malformed_json_is_400(client):
    response = client.post("/api/v1/buckets", data="{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json["code"] == "InvalidArgument"


@pytest.mark.parametrize("key,content_type", [
    ("a" * 1025, None),
    ("bad\x01key", None),
    ("ok", "not a type"),
    ("ok", "text/plain; x=\x7f"),
])
def test_bad_upload_headers_and_keys(client, storage, local_location, key, content_type):
    make_bucket(storage)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.put(f"/api/v1/buckets/bucket/objects/{key}", data=b"x", headers=headers)
    assert response.status_code == 400 and response.json["code"] == "InvalidArgument"


@pytest.mark.parametrize("header,value", [("Content-MD5", "***"), ("Content-MD5", "YWJj"),
                                          ("X-Checksum-Sha256", "xyz")])
def test_malformed_digest_headers(client, storage, local_location, header, value):
    make_bucket(storage)
    response = client.put("/api/v1/buckets/bucket/objects/k", data=b"x", headers={header: value})
    assert response.status_code == 400 and response.json["code"] == "InvalidArgument"


def test_unknown_things_are_404_problems(client, storage):
    for path in ["/api/v1/buckets/nope", "/api/v1/buckets/nope/objects", "/api/v1/storage-locations/nope",
                 f"/api/v1/files/{CHECKSUM}", "/api/v1/nothing-here"]:
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json["code"] == "NotFound"
    assert client.put("/api/v1/buckets/nope/objects/k", data=b"x").status_code == 404


def test_method_not_allowed_is_a_problem(client):
    response = client.put("/api/v1/buckets")
    assert response.status_code == 405 and response.json["code"] == "MethodNotAllowed"
