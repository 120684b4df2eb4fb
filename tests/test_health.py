"""Readiness (both profiles): this instance can serve; details only for admins; a broken location is degraded.

A location is broken for real here: its root directory removed after it was added (an unmounted volume), or
an S3 endpoint where nothing listens. A location gets its local root when it is added, so a fresh service
is ready at once (`make run`, tested at the end on a real gunicorn).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import make_bucket, put
from tests.support.servers import free_port
from tests.test_observability import metric

REPO = Path(__file__).resolve().parent.parent


def add_local(storage, name: str, root: Path, **fields) -> None:
    storage.location_service().create({"name": name, "plugin": "local", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": {"root": str(root)}, **fields})


def add_unreachable_s3(storage, name: str = "far") -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage.location_service().create(
        {"name": name, "plugin": "s3", "tier": "cold", "priority": 0, "enabled": True,
         "config": {"endpoint": f"127.0.0.1:{port}", "access_key": "k", "secret_key": "s",
                    "bucket": "pieces", "secure": False}}, check=False)


def test_a_local_location_gets_its_root_when_added(storage, tmp_path):
    root = tmp_path / "new" / "root"
    add_local(storage, "hot", root)
    assert root.is_dir()
    assert storage.health_service().readiness()["status"] == "ok"


@pytest.mark.profile("storage")
def test_a_root_missing_later_is_a_fault_not_an_empty_location(storage, client, tmp_path):
    root = tmp_path / "volume"
    add_local(storage, "hot", root)
    make_bucket(storage)
    shutil.rmtree(root)  # the volume is unmounted: its mount point is gone with it

    response = client.put("/api/v1/buckets/bucket/objects/k", data=b"data")
    assert response.status_code == 503, response.json
    assert not root.exists(), "an upload must not recreate the root of an unmounted volume"
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json["status"] == "unavailable"
    assert "missing" in ready.json["checks"]["location:hot"]


def test_one_broken_location_is_degraded_not_503(storage, client, anonymous, tmp_path):
    add_local(storage, "hot", tmp_path / "hot")
    add_local(storage, "gone", tmp_path / "gone")
    add_unreachable_s3(storage)
    shutil.rmtree(tmp_path / "gone")

    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json["status"] == "degraded"
    checks = ready.json["checks"]
    assert checks["database"] == "ok" and checks["location:hot"] == "ok"
    assert checks["location:gone"].startswith("unavailable") and checks["location:far"].startswith("unavailable")

    text = anonymous.get("/metrics").get_data(as_text=True)
    assert metric(text, "storage_location_up", location="hot") == 1
    assert metric(text, "storage_location_up", location="gone") == 0
    assert metric(text, "storage_location_up", location="far") == 0


def test_no_readable_location_is_503(storage, client, tmp_path):
    assert client.get("/health/ready").status_code == 503  # no location at all: nothing can be served
    add_unreachable_s3(storage)
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json["status"] == "unavailable"


def test_only_online_locations_make_the_instance_ready(storage, client, tmp_path):
    """A nearline location (tape, Glacier) cannot be read directly: healthy or not, it does not make the
    instance able to serve; a broken one still makes it degraded."""
    storage.location_service().create({"name": "tape", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "access": "nearline",
                                       "config": {"root": str(tmp_path / "tape"), "restore_seconds": 1}})
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json["status"] == "unavailable"
    assert ready.json["checks"]["location:tape"] == "ok"
    add_local(storage, "hot", tmp_path / "hot")
    ready = client.get("/health/ready")
    assert ready.json["status"] == "ok", ready.json
    shutil.rmtree(tmp_path / "tape")
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json["status"] == "degraded"


def test_disabled_locations_do_not_count(storage, client, tmp_path):
    add_local(storage, "hot", tmp_path / "hot")
    add_local(storage, "off", tmp_path / "off", enabled=False)
    shutil.rmtree(tmp_path / "off")
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json["status"] == "ok"
    assert "location:off" not in ready.json["checks"]


def test_readiness_details_are_for_admins_only(storage, client, anonymous, auth, tmp_path):
    add_local(storage, "hot", tmp_path / "hot-root")
    add_unreachable_s3(storage, "secret-archive")
    make_bucket(storage, "private-bucket-name", visibility="private")

    admin = client.get("/health/ready")
    assert admin.status_code == 200 and "location:secret-archive" in admin.json["checks"]
    for who, headers in [("anonymous", {}), ("owner", auth.headers("olivia")),
                         ("bad token", {"Authorization": "Bearer not-a-token"})]:
        response = anonymous.get("/health/ready", headers=headers)
        assert response.status_code == 200, (who, response.json)
        assert response.json == {"status": "degraded"}, who
        text = response.get_data(as_text=True)
        for secret in ("secret-archive", "hot-root", "127.0.0.1", "private-bucket-name", "unavailable"):
            assert secret not in text, (who, secret)


def test_a_location_that_does_not_answer_cannot_hold_readiness(storage, client, settings, tmp_path):
    """An S3 endpoint that accepts connections and never answers (a hung host): readiness still answers
    within its time bound, with the location unavailable."""
    add_local(storage, "hot", tmp_path / "hot")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: the kernel completes handshakes, nobody reads or answers
    try:
        storage.location_service().create(
            {"name": "hung", "plugin": "s3", "tier": "cold", "priority": 0, "enabled": True,
             "config": {"endpoint": f"127.0.0.1:{silent.getsockname()[1]}", "access_key": "k", "secret_key": "s",
                        "bucket": "pieces", "secure": False}}, check=False)
        started = time.monotonic()
        ready = client.get("/health/ready")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert ready.status_code == 200 and ready.json["status"] == "degraded"
    assert "no answer" in ready.json["checks"]["location:hung"]
    assert elapsed < settings.ready_timeout + 1.5, elapsed


def test_readiness_follows_a_download_in_the_same_process(storage, client, tmp_path):
    add_local(storage, "hot", tmp_path / "hot")
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * 10)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200
    assert client.get("/health/ready").json["status"] == "ok"


@pytest.mark.slow
@pytest.mark.profile("storage")
def test_a_fresh_make_run_is_ready_at_once(tmp_path):
    """`make run` on an empty data directory: /health/ready answers 200 as soon as the service answers."""
    port, s3_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("STORAGE_") and name != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(STORAGE_DATA_DIR=str(tmp_path / "var"), STORAGE_WORKERS="1", STORAGE_LOG_LEVEL="WARNING")
    log = (tmp_path / "make-run.log").open("wb")
    # -o install: the suite runs inside the installed .venv; never reinstall from a test
    process = subprocess.Popen(["make", "-s", "-C", str(REPO), "-o", "install", "run", f"BIND=127.0.0.1:{port}",
                                f"S3_BIND=127.0.0.1:{s3_port}",
                                f"PYTHON={sys.executable}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "make-run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "make-run.log").read_text()
            try:
                live = requests.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                if live.status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        ready = requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok"}
        assert (tmp_path / "var" / "locations" / "local").is_dir()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
