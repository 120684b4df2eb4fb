"""S3 access keys (storage profile): the routes, who may create what, sealing, `storage-admin access-key`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage_core.models import AccessKey
from storage_core.s3.keys import is_access_key_id

pytestmark = pytest.mark.profile("storage")


def test_an_account_creates_lists_and_deletes_its_own_keys(app, auth, storage):
    client = app.test_client()
    olivia = auth.headers("olivia", ["reader"])
    created = client.post("/api/v1/access-keys", json={"description": "laptop"}, headers=olivia)
    assert created.status_code == 201, created.json
    key = created.json
    assert is_access_key_id(key["access_key_id"]) and len(key["secret_access_key"]) == 40
    assert key["account"] == "olivia" and key["roles"] == ["reader"] and key["description"] == "laptop"
    # the secret is shown once: never listed, never stored in clear
    listed = client.get("/api/v1/access-keys", headers=olivia).json["access_keys"]
    assert [k["access_key_id"] for k in listed] == [key["access_key_id"]]
    assert "secret_access_key" not in listed[0]
    with storage.session_factory()() as session:
        sealed = session.scalar(select(AccessKey.sealed_secret))
    assert key["secret_access_key"] not in sealed
    identity = storage.access_key_service().lookup(key["access_key_id"])
    assert identity.secret == key["secret_access_key"] and identity.principal.account == "olivia"
    # another account neither sees nor deletes it
    assert client.get("/api/v1/access-keys", headers=auth.headers("mallory")).json["access_keys"] == []
    assert client.delete(f"/api/v1/access-keys/{key['access_key_id']}",
                         headers=auth.headers("mallory")).status_code == 404
    assert client.delete(f"/api/v1/access-keys/{key['access_key_id']}", headers=olivia).status_code == 204
    assert storage.access_key_service().lookup(key["access_key_id"]) is None
    assert client.get("/api/v1/access-keys", headers=olivia).json["access_keys"] == []


def test_only_admins_create_keys_for_others_or_with_more_roles(app, auth):
    client = app.test_client()
    olivia = auth.headers("olivia", ["reader"])
    other = client.post("/api/v1/access-keys", json={"account": "mallory"}, headers=olivia)
    assert other.status_code == 403 and other.json["code"] == "Forbidden"
    escalate = client.post("/api/v1/access-keys", json={"roles": ["admin"]}, headers=olivia)
    assert escalate.status_code == 403
    fewer = client.post("/api/v1/access-keys", json={"roles": []}, headers=olivia)
    assert fewer.status_code == 201 and fewer.json["roles"] == []
    by_admin = client.post("/api/v1/access-keys", json={"account": "mallory", "roles": ["admin"]},
                           headers=auth.admin)
    assert by_admin.status_code == 201 and by_admin.json["account"] == "mallory"
    assert len(client.get("/api/v1/access-keys", headers=auth.admin).json["access_keys"]) == 2
    assert client.post("/api/v1/access-keys", json={}).status_code == 401
    assert client.post("/api/v1/access-keys", json={"bogus": 1}, headers=olivia).status_code == 400


def test_a_key_opens_only_under_its_sealing_secret_or_after_rotation(settings, storage):
    from storage_core.auth import DEVELOPMENT_ADMIN
    from storage_core.services.access_keys import AccessKeyService

    def service(**changes) -> AccessKeyService:
        return AccessKeyService(storage.session_factory(), storage.autocommit_engine(), settings.replace(**changes))

    old = "old-sealing-secret-with-plenty-of-entropy-0123"
    key = service(s3_sealing_key=old).create(DEVELOPMENT_ADMIN, "olivia", [])
    assert service(s3_sealing_key=old).lookup(key["access_key_id"]).account == "olivia"
    # another deployment's secret (or the JWT-derived default) does not open it
    assert service().lookup(key["access_key_id"]) is None
    assert service(s3_sealing_key="another-deployment-secret-0123456789").lookup(key["access_key_id"]) is None
    # rotation: the new secret with the old one as previous still opens it
    rotated = service(s3_sealing_key="new-sealing-secret-0123456789abcdef", s3_sealing_previous=old)
    assert rotated.lookup(key["access_key_id"]).secret == key["secret_access_key"]


def test_storage_admin_access_key_commands(tmp_path: Path):
    env = {**os.environ, "STORAGE_DATA_DIR": str(tmp_path / "var"), "STORAGE_DATABASE_URL": "",
           "STORAGE_JWT_SECRET": "cli-secret-of-at-least-thirty-two-characters"}

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "storage_core.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    assert admin("db", "upgrade").returncode == 0
    created = admin("access-key", "create", "--account", "ci", "--role", "admin")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["account"] == "ci" and key["roles"] == ["admin"] and key["secret_access_key"]
    listed = json.loads(admin("access-key", "list").stdout)
    assert [k["access_key_id"] for k in listed] == [key["access_key_id"]]
    assert admin("access-key", "delete", key["access_key_id"]).returncode == 0
    assert json.loads(admin("access-key", "list").stdout) == []
    missing = admin("access-key", "delete", key["access_key_id"])
    assert missing.returncode == 1 and "NotFound" in missing.stderr
