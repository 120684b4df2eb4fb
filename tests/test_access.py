"""Access control: the permission table, rejected tokens and URLs, and a downloader holding only a public key."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

import profiles
from storage_core.app import create_app
from storage_core.auth import DEVELOPMENT_ADMIN, Authenticator, Principal
from storage_core.errors import ConfigurationError
from storage_core.models import Bucket, Object, ReadRecord
from tests.conftest import ACTIVE, make_bucket, make_container, put
from tests.support.servers import GunicornServer

SECRET = "test-secret-of-32-characters-at-least"
STORAGE_ACTIVE = profiles.STORAGE in ACTIVE


@pytest.fixture
def auth_settings(settings):
    return settings.replace(auth_disabled=False, jwt_secret=SECRET)


@pytest.fixture
def auth_storage(auth_settings, engine):
    return make_container(auth_settings, engine, frozenset({profiles.STORAGE}))


@pytest.fixture
def auth_client(auth_settings, engine):
    container = make_container(auth_settings, engine, ACTIVE)
    return create_app(settings=auth_settings, container=container).test_client()


def token(sub: str, roles: list[str] | None = None, ttl: int = 600, key: str = SECRET, alg: str = "HS256") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "roles": roles or [], "exp": now + ttl}, key, algorithm=alg)


@pytest.fixture
def buckets(auth_storage, local_location):
    make_bucket(auth_storage, "public", owner="olivia", visibility="public-read")
    make_bucket(auth_storage, "private", owner="olivia", visibility="private")
    put(auth_storage, "public", "obj", b"public data")
    put(auth_storage, "private", "obj", b"private data")


def presigned_path(auth_storage, bucket: str, key: str = "obj", account: str = "olivia", expires: int = 600,
                   roles: frozenset[str] = frozenset()) -> str:
    path, _ = auth_storage.permission_service().presign(Principal(account, roles), bucket, key, expires)
    return path


def request_as(client, auth_storage, actor: str, method: str, path: str, **kwargs):
    headers = {
        "anonymous": {}, "presigned": {},
        "owner": {"Authorization": f"Bearer {token('olivia')}"},
        "other": {"Authorization": f"Bearer {token('mallory')}"},
        "admin": {"Authorization": f"Bearer {token('root', ['admin'])}"},
    }[actor]
    if actor == "presigned":
        # the URL signed for reading the bucket's object, its signature presented on the requested path
        bucket = path.split("/")[4]
        path = f"{path}?{urlsplit(presigned_path(auth_storage, bucket)).query}"
    return client.open(path, method=method, headers=headers, **kwargs)


# actor -> expected status for (read public, read private, write public, write private, manage public, manage private)
PERMISSIONS = {
    "anonymous": (200, 401, 401, 401, 401, 401),
    "owner": (200, 200, 200, 200, 200, 200),
    "other": (200, 403, 403, 403, 403, 403),
    "admin": (200, 200, 200, 200, 200, 200),
    "presigned": (200, 200, 403, 403, 403, 403),
}
OPERATIONS = [
    ("read", "public"), ("read", "private"), ("write", "public"), ("write", "private"),
    ("manage", "public"), ("manage", "private"),
]


@pytest.mark.parametrize("actor", list(PERMISSIONS))
@pytest.mark.parametrize("operation", range(len(OPERATIONS)), ids=[f"{o}-{b}" for o, b in OPERATIONS])
def test_permission_table(auth_client, auth_storage, buckets, actor, operation):
    kind, bucket = OPERATIONS[operation]
    expected = PERMISSIONS[actor][operation]
    if kind == "read":
        response = request_as(auth_client, auth_storage, actor, "GET", f"/api/v1/buckets/{bucket}/objects/obj")
        if expected == 200:
            assert response.data == f"{bucket} data".encode()
    elif kind == "write":
        if not STORAGE_ACTIVE:
            pytest.skip("uploads are not served by the downloader profile")
        response = request_as(auth_client, auth_storage, actor, "PUT", f"/api/v1/buckets/{bucket}/objects/obj",
                              data=b"new")
    else:
        # the bill is the owner's business; read-quota exists in both profiles
        response = request_as(auth_client, auth_storage, actor, "GET", f"/api/v1/buckets/{bucket}/read-quota")
    assert response.status_code == expected, response.get_data(as_text=True)
    if expected >= 400:
        assert response.json["code"] == {401: "Unauthorized", 403: "Forbidden"}[expected]
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_reads_are_recorded_under_the_right_account(auth_client, auth_storage, buckets):
    auth_client.get("/api/v1/buckets/public/objects/obj")
    auth_client.get("/api/v1/buckets/private/objects/obj", headers={"Authorization": f"Bearer {token('olivia')}"})
    auth_client.get(presigned_path(auth_storage, "private", account="root", roles=frozenset({"admin"})))
    with auth_storage.session_factory()() as session:
        accounts = session.scalars(select(ReadRecord.account).order_by(ReadRecord.id)).all()
    assert accounts == ["anonymous", "olivia", "root"]  # a presigned read is charged to its signer


def test_private_keys_do_not_leak(auth_client, buckets):
    missing = auth_client.get("/api/v1/buckets/private/objects/nothing-here")
    assert missing.status_code == 401
    other = auth_client.get("/api/v1/buckets/private/objects/nothing-here",
                            headers={"Authorization": f"Bearer {token('mallory')}"})
    assert other.status_code == 403
    owner = auth_client.get("/api/v1/buckets/private/objects/nothing-here",
                            headers={"Authorization": f"Bearer {token('olivia')}"})
    assert owner.status_code == 404


@pytest.mark.profile("storage")
def test_management_needs_the_right_role(auth_client, buckets):
    user = {"Authorization": f"Bearer {token('mallory')}"}
    admin = {"Authorization": f"Bearer {token('root', ['admin'])}"}
    assert auth_client.get("/api/v1/storage-locations").status_code == 401
    assert auth_client.get("/api/v1/storage-locations", headers=user).status_code == 403
    assert auth_client.get("/api/v1/storage-locations", headers=admin).status_code == 200
    # anyone with a token may create a bucket of their own, and sees only their own
    created = auth_client.post("/api/v1/buckets", json={"name": "mallorys"}, headers=user)
    assert created.status_code == 201 and created.json["owner"] == "mallory"
    assert [b["name"] for b in auth_client.get("/api/v1/buckets", headers=user).json["buckets"]] == ["mallorys"]
    assert len(auth_client.get("/api/v1/buckets", headers=admin).json["buckets"]) == 3
    # ... but not give it away or grant themselves free quota
    assert auth_client.post("/api/v1/buckets", json={"name": "stolen", "owner": "olivia"},
                            headers=user).status_code == 403
    assert auth_client.patch("/api/v1/buckets/mallorys", json={"free_read_quota": 10 ** 12},
                             headers=user).status_code == 403
    assert auth_client.patch("/api/v1/buckets/mallorys", json={"charged_read_quota": 10},
                             headers=user).status_code == 200
    checksum = "0" * 64
    assert auth_client.get(f"/api/v1/files/{checksum}", headers=user).status_code == 403


@pytest.mark.profile("storage")
def test_presign_endpoint(auth_client, buckets):
    owner = {"Authorization": f"Bearer {token('olivia')}"}
    response = auth_client.post("/api/v1/buckets/private/objects/obj/presign", json={"expires_in": 60},
                                headers=owner)
    assert response.status_code == 200
    url = urlsplit(response.json["url"])
    assert abs(response.json["expires_at"] - time.time() - 60) < 5
    assert auth_client.get(f"{url.path}?{url.query}").data == b"private data"
    assert auth_client.post("/api/v1/buckets/private/objects/missing/presign", json={},
                            headers=owner).status_code == 404
    assert auth_client.post("/api/v1/buckets/private/objects/obj/presign", json={"expires_in": 0},
                            headers=owner).status_code == 400
    other = {"Authorization": f"Bearer {token('mallory')}"}
    assert auth_client.post("/api/v1/buckets/private/objects/obj/presign", json={},
                            headers=other).status_code == 403


def tamper_payload(good: str) -> str:
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def alg_none(sub: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': sub, 'roles': ['admin'], 'exp': 2 ** 40})}."


@pytest.mark.parametrize("authorization", [
    "Bearer " + token("olivia", ttl=-60),
    "Bearer " + tamper_payload(token("olivia")),
    "Bearer " + alg_none("olivia"),
    "Bearer " + token("olivia", key="another-secret-of-32-characters!!"),
    "Bearer not.a.token",
    "Bearer ",
    "Basic b2xpdmlhOnB3",
    "Bearer " + jwt.encode({"sub": "olivia", "roles": []}, SECRET, algorithm="HS256"),  # no exp
])
def test_bad_tokens_are_401(auth_client, buckets, authorization):
    response = auth_client.get("/api/v1/buckets/private/objects/obj", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json["code"] == "Unauthorized"


def changed(url: str, new_path: str | None = None, **query_changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(query_changes)
    return f"{new_path or parts.path}?{urlencode(query)}"


@pytest.mark.parametrize("change", ["path", "expiry", "signature", "account", "expired", "bucket-id", "issued",
                                    "as-admin"])
def test_tampered_or_expired_presigned_urls_are_403(auth_client, auth_storage, buckets, change):
    good = presigned_path(auth_storage, "private")
    assert auth_client.get(good).status_code == 200
    bad = {
        "path": lambda: changed(good, "/api/v1/buckets/private/objects/other"),
        "expiry": lambda: changed(good, **{"X-Storage-Expires": str(int(time.time()) + 10 ** 6)}),
        "signature": lambda: changed(good, **{"X-Storage-Signature": "0" * 64}),
        "account": lambda: changed(good, **{"X-Storage-Account": "somebody-else"}),
        "expired": lambda: presigned_path(auth_storage, "private", expires=-1),
        "bucket-id": lambda: changed(good, **{"X-Storage-Bucket": "12345"}),
        "issued": lambda: changed(good, **{"X-Storage-Issued": str(time.time_ns() // 1000 + 10**9)}),
        "as-admin": lambda: changed(good, **{"X-Storage-Admin": "1"}),
    }[change]()
    response = auth_client.get(bad)
    assert response.status_code == 403 and response.json["code"] == "Forbidden"


def test_service_refuses_to_start_without_keys(settings):
    with pytest.raises(ConfigurationError, match="STORAGE_JWT_SECRET"):
        Authenticator(settings.replace(auth_disabled=False, jwt_secret=""))


def test_auth_disabled_logs_a_loud_warning(settings, caplog):
    Authenticator(settings.replace(auth_disabled=True))
    assert "authentication is OFF" in caplog.text


def keypair() -> tuple[str, str]:
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


@pytest.mark.slow
def test_downloader_with_only_a_public_key(settings, engine, local_location, monkeypatch):
    private_pem, public_pem = keypair()
    url_secret = "url-signing-secret-shared-with-downloaders"
    storage_settings = settings.replace(auth_disabled=False, jwt_private_key=private_pem,
                                        url_signing_secret=url_secret)
    storage = make_container(storage_settings, engine, frozenset({profiles.STORAGE}))
    make_bucket(storage, "private", owner="olivia", visibility="private")
    put(storage, "private", "obj", b"secret bytes")
    issued = storage.authenticator().issue_token("olivia", [], 600)
    assert jwt.get_unverified_header(issued)["alg"] == "EdDSA"
    path, _ = storage.permission_service().presign(Principal("olivia"), "private", "obj", 600)

    monkeypatch.delenv("STORAGE_JWT_SECRET", raising=False)
    downloader = GunicornServer(settings, workers=1, extra_env={
        "STORAGE_PROFILES": "downloader", "STORAGE_AUTH_DISABLED": "0", "STORAGE_JWT_PUBLIC_KEY": public_pem,
        "STORAGE_URL_SIGNING_SECRET": url_secret})
    try:
        url = f"{downloader.url}/api/v1/buckets/private/objects/obj"
        assert requests.get(url, headers={"Authorization": f"Bearer {issued}"}, timeout=10).content == b"secret bytes"
        assert requests.get(downloader.url + path, timeout=10).content == b"secret bytes"
        assert requests.get(url, timeout=10).status_code == 401
        hs256 = token("olivia")  # signed with a secret the downloader does not hold
        assert requests.get(url, headers={"Authorization": f"Bearer {hs256}"}, timeout=10).status_code == 401
        other_key, _ = keypair()
        forged = jwt.encode({"sub": "olivia", "exp": int(time.time()) + 60},
                            serialization.load_pem_private_key(other_key.encode(), None), algorithm="EdDSA")
        assert requests.get(url, headers={"Authorization": f"Bearer {forged}"}, timeout=10).status_code == 401
        assert requests.put(url, data=b"x", timeout=10).status_code == 404  # no uploads on a downloader
    finally:
        downloader.stop()


# ---- presigned URLs are checked again at each use ----------------------------------------------

@pytest.mark.profile("storage")
def test_a_presigned_url_dies_with_its_object_and_bucket(auth_client, auth_storage, buckets):
    url = presigned_path(auth_storage, "private")
    assert auth_client.get(url).data == b"private data"
    auth_storage.object_service().delete("private", "obj")
    gone = auth_client.get(url)
    assert gone.status_code == 403 and gone.json["code"] == "Forbidden"
    # the bucket is deleted and someone else makes one of the same name, with their own private object there
    auth_storage.bucket_service().delete("private")
    make_bucket(auth_storage, "private", owner="mallory", visibility="private")
    put(auth_storage, "private", "obj", b"mallory's data")
    reused = auth_client.get(url)
    assert reused.status_code == 403 and b"mallory" not in reused.data
    with auth_storage.session_factory()() as session:
        # olivia's record went with her bucket; the new bucket was charged nothing
        assert session.scalars(select(ReadRecord.account)).all() == []


@pytest.mark.profile("storage")
def test_a_presigned_url_dies_when_its_signer_loses_the_bucket(auth_client, auth_storage, buckets):
    url = presigned_path(auth_storage, "private")
    admin_url = presigned_path(auth_storage, "private", account="root", roles=frozenset({"admin"}))
    auth_storage.bucket_service().update("private", {"owner": "mallory"}, DEVELOPMENT_ADMIN)
    assert auth_client.get(url).status_code == 403
    assert auth_client.get(admin_url).data == b"private data"  # an admin may read any bucket
    auth_storage.bucket_service().update("private", {"owner": "olivia"}, DEVELOPMENT_ADMIN)
    assert auth_client.get(url).data == b"private data"


@pytest.mark.profile("storage")
def test_revoking_an_accounts_presigned_urls(auth_client, auth_storage, buckets):
    olivia = {"Authorization": f"Bearer {token('olivia')}"}
    old = presigned_path(auth_storage, "private")
    assert auth_client.get(old).status_code == 200
    assert auth_client.post("/api/v1/accounts/olivia/presign-revocations",
                            headers={"Authorization": f"Bearer {token('mallory')}"}).status_code == 403
    assert auth_client.post("/api/v1/accounts/olivia/presign-revocations").status_code == 401
    revoked = auth_client.post("/api/v1/accounts/olivia/presign-revocations", headers=olivia)
    assert revoked.status_code == 201 and revoked.json["account"] == "olivia"
    assert auth_client.get(old).status_code == 403
    assert auth_client.get(presigned_path(auth_storage, "private")).status_code == 200  # new ones work
    # an admin revokes anyone's, and so does storage-admin
    assert auth_client.post("/api/v1/accounts/olivia/presign-revocations",
                            headers={"Authorization": f"Bearer {token('root', ['admin'])}"}).status_code == 201


def test_anonymous_callers_cannot_tell_a_private_file_from_a_missing_one(auth_client, auth_storage, buckets):
    with auth_storage.session_factory()() as session:
        private = session.scalar(select(Object.checksum).join(Bucket).where(Bucket.name == "private"))
    unknown = "0" * 64
    for suffix in ("", "?bucket=private", "?bucket=nope"):
        hidden = auth_client.get(f"/api/v1/files/{private}/download{suffix}")
        missing = auth_client.get(f"/api/v1/files/{unknown}/download{suffix}")
        assert hidden.status_code == missing.status_code == 404, suffix
        assert hidden.json["code"] == missing.json["code"] == "NotFound"
    olivia = {"Authorization": f"Bearer {token('olivia')}"}
    assert auth_client.get(f"/api/v1/files/{private}/download", headers=olivia).data == b"private data"
