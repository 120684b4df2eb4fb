"""The S3 API through the minio SDK, aws-cli and rclone, with their default settings, checking integrity.

aws-cli is the venv's (the ``awscli`` test extra); rclone is Debian's package, installed when missing.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject

from tests.support.s3env import KiB, MiB, S3Env, s3_env
from tests.support.tools import aws_cli, debian_tool

pytestmark = [pytest.mark.profile("storage"), pytest.mark.slow]


@pytest.fixture(scope="module")
def env(database_url, tmp_path_factory):
    with s3_env(database_url, tmp_path_factory.mktemp("s3clients"), workers=2,
                env={"STORAGE_PROFILES": "storage"}) as made:
        yield made


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def write_random(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            out.write(os.urandom(min(left, MiB)))
            left -= min(left, MiB)
    return path


# ---- the minio SDK -----------------------------------------------------------------------------------

def test_minio_sdk(env: S3Env, tmp_path: Path):
    client = Minio(env.server.s3_url.removeprefix("http://"), access_key=env.admin.access_key_id,
                   secret_key=env.admin.secret, secure=False)
    client.make_bucket("minio")
    assert client.bucket_exists("minio") and not client.bucket_exists("minio-none")
    assert "minio" in [b.name for b in client.list_buckets()]
    data = os.urandom(100 * KiB)
    written = client.put_object("minio", "dir/small", io.BytesIO(data), len(data), content_type="text/x-minio",
                                metadata={"x-amz-meta-origin": "minio"})
    assert written.etag == hashlib.md5(data).hexdigest()
    stat = client.stat_object("minio", "dir/small")
    assert stat.size == len(data) and stat.content_type == "text/x-minio" and stat.etag == written.etag
    assert stat.metadata["x-amz-meta-origin"] == "minio"
    response = client.get_object("minio", "dir/small", offset=10, length=20)
    assert response.read() == data[10:30]
    response.close()
    response.release_conn()
    # a file above minio's 5 MiB part size: a multipart upload
    big = write_random(tmp_path / "big", 12 * MiB + 3)
    client.fput_object("minio", "dir/big", str(big))
    assert client.stat_object("minio", "dir/big").etag.endswith("-3")
    client.fget_object("minio", "dir/big", str(tmp_path / "big.down"))
    assert sha256_of(tmp_path / "big.down") == sha256_of(big)
    client.put_object("minio", "zero", io.BytesIO(b""), 0)
    assert client.get_object("minio", "zero").read() == b""
    assert sorted(o.object_name for o in client.list_objects("minio", recursive=True)) == \
        ["dir/big", "dir/small", "zero"]
    assert sorted(o.object_name for o in client.list_objects("minio")) == ["dir/", "zero"]
    client.copy_object("minio", "copied", CopySource("minio", "dir/small"))
    assert client.get_object("minio", "copied").read() == data
    url = client.presigned_get_object("minio", "dir/small", expires=timedelta(minutes=5))
    assert requests.get(url, timeout=10).content == data
    put_url = client.presigned_put_object("minio", "via-url", expires=timedelta(minutes=5))
    assert requests.put(put_url, data=b"presigned by minio", timeout=10).status_code == 200
    assert client.get_object("minio", "via-url").read() == b"presigned by minio"
    errors = list(client.remove_objects("minio", [DeleteObject(n) for n in ("dir/big", "dir/small", "zero",
                                                                             "copied", "via-url")]))
    assert errors == []
    assert list(client.list_objects("minio", recursive=True)) == []
    client.remove_bucket("minio")
    assert not client.bucket_exists("minio")


# ---- aws-cli -----------------------------------------------------------------------------------------

def aws(env: S3Env, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "aws-home"
    home.mkdir(exist_ok=True)
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": env.admin.access_key_id,
                   "AWS_SECRET_ACCESS_KEY": env.admin.secret, "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
                   "HOME": str(home)}
    done = subprocess.run([aws_cli(), "--endpoint-url", env.server.s3_url, *args], env=environment,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_aws_cli_cp_ls_sync(env: S3Env, tmp_path: Path):
    aws(env, tmp_path, "s3", "mb", "s3://cli")
    big = write_random(tmp_path / "big.bin", 100 * MiB)  # above the 8 MiB threshold: a multipart upload
    aws(env, tmp_path, "s3", "cp", str(big), "s3://cli/big.bin")
    head = env.client().head_object(Bucket="cli", Key="big.bin")
    assert head["ContentLength"] == 100 * MiB and head["ETag"].endswith('-13"')
    aws(env, tmp_path, "s3", "cp", "s3://cli/big.bin", str(tmp_path / "big.down"))
    assert sha256_of(tmp_path / "big.down") == sha256_of(big)
    listed = aws(env, tmp_path, "s3", "ls", "s3://cli/").stdout
    assert "big.bin" in listed and str(100 * MiB) in listed
    tree = tmp_path / "tree"
    for name, size in (("a.txt", 10), ("sub/b.bin", 200 * KiB), ("sub/deeper/c.bin", 9 * MiB), ("empty", 0)):
        write_random(tree / name, size)
    aws(env, tmp_path, "s3", "sync", str(tree), "s3://cli/tree")
    again = aws(env, tmp_path, "s3", "sync", str(tree), "s3://cli/tree").stdout
    assert "upload:" not in again  # nothing changed: nothing sent
    aws(env, tmp_path, "s3", "sync", "s3://cli/tree", str(tmp_path / "back"))
    for path in tree.rglob("*"):
        if path.is_file():
            assert sha256_of(tmp_path / "back" / path.relative_to(tree)) == sha256_of(path)
    recursive = aws(env, tmp_path, "s3", "ls", "--recursive", "s3://cli/tree/").stdout
    assert sorted(line.split()[-1] for line in recursive.splitlines()) == \
        ["tree/a.txt", "tree/empty", "tree/sub/b.bin", "tree/sub/deeper/c.bin"]


# ---- rclone ------------------------------------------------------------------------------------------

def rclone(env: S3Env, *args: str) -> subprocess.CompletedProcess[str]:
    # AWS_* of the machine (AWS_CA_BUNDLE, say) would be read by rclone's AWS SDK and break plain HTTP
    machine = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment = {**machine, "RCLONE_CONFIG": "/dev/null", "RCLONE_CONFIG_TARGET_TYPE": "s3",
                   "RCLONE_CONFIG_TARGET_PROVIDER": "Other", "RCLONE_CONFIG_TARGET_ENDPOINT": env.server.s3_url,
                   "RCLONE_CONFIG_TARGET_ACCESS_KEY_ID": env.admin.access_key_id,
                   "RCLONE_CONFIG_TARGET_SECRET_ACCESS_KEY": env.admin.secret,
                   "RCLONE_CONFIG_TARGET_REGION": "us-east-1"}
    done = subprocess.run([debian_tool("rclone"), *args], env=environment, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_rclone_copy_and_check(env: S3Env, tmp_path: Path):
    tree = tmp_path / "tree"
    for name, size in (("one.txt", 11), ("dir/two.bin", 300 * KiB), ("dir/big.bin", 12 * MiB), ("zero", 0)):
        write_random(tree / name, size)
    # a low cutoff so the big file goes multipart (rclone records its md5 in metadata for check)
    rclone(env, "copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(tree), "target:rclone/tree")
    checked = rclone(env, "check", str(tree), "target:rclone/tree")
    assert "0 differences found" in checked.stderr
    assert env.client().head_object(Bucket="rclone", Key="tree/dir/big.bin")["ETag"].endswith('-3"')
    rclone(env, "copy", "target:rclone/tree", str(tmp_path / "back"))
    for path in tree.rglob("*"):
        if path.is_file():
            assert sha256_of(tmp_path / "back" / path.relative_to(tree)) == sha256_of(path)
    listed = rclone(env, "lsf", "-R", "target:rclone/tree").stdout.split()
    assert sorted(listed) == ["dir/", "dir/big.bin", "dir/two.bin", "one.txt", "zero"]
