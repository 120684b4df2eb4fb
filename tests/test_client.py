"""`storage-client` against the real service (gunicorn): the installed console script in a subprocess.

Uploads need the storage profile; downloads, quota and records run against whichever profile is
active (the downloader serves them too). Faults are real: the client is killed mid-transfer, and a
proxy on loopback cuts or stalls the connection in the middle of a body.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import io
import json
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.models import Bucket, ReadRecord
from tests.conftest import make_bucket, put
from tests.support.proxy import FaultyProxy
from tests.support.servers import GunicornServer

KiB, MiB = 1024, 1024 * 1024
CLIENT = Path(sys.executable).with_name("storage-client")
STORAGE = pytest.mark.profile("storage")
pytestmark = [pytest.mark.slow]


@pytest.fixture
def client_settings(settings):
    """Realistic pieces (8 MiB), so that a 300 MiB upload is a few dozen pieces."""
    return settings.replace(piece_size=8 * MiB, block_size=1 * MiB)


@pytest.fixture
def storage(client_settings, engine):
    from tests.conftest import make_container

    return make_container(client_settings, engine, frozenset({"storage"}))


@pytest.fixture
def server(client_settings, storage, local_location) -> Iterator[GunicornServer]:
    running = GunicornServer(client_settings, workers=2, extra_env={"STORAGE_LOG_LEVEL": "INFO"})
    yield running
    running.stop()


def environment(tmp_path: Path, url: str, token: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE_")}
    env.update({"STORAGE_URL": url, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "XDG_CONFIG_HOME": str(tmp_path / "config"), **extra})
    if token:
        env["STORAGE_TOKEN"] = token
    return env


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLIENT), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return done


def random_file(path: Path, size: int) -> str:
    """``size`` random bytes in ``path``; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def access_lines(server: GunicornServer, start: int = 0) -> list[dict[str, Any]]:
    text = server.log.read_text(errors="replace")[start:]
    return [entry for entry in (json.loads(line) for line in text.splitlines() if line.startswith("{"))
            if entry.get("logger") == "storage_core.accesslog"]


def records_of(storage, bucket: str) -> list[ReadRecord]:
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id).where(Bucket.name == bucket))
        return list(session.scalars(select(ReadRecord).where(ReadRecord.bucket_id == bucket_id)
                                    .order_by(ReadRecord.timestamp_us, ReadRecord.id)))


def wait_until(condition, timeout: float = 60, message: str = "") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out: {message}")


# ---- uploads (storage profile) -----------------------------------------------------------------------


@STORAGE
def test_put_ls_presign_get_rm(server, storage, auth, tmp_path):
    make_bucket(storage, "photos", owner="olivia", visibility="private")
    env = environment(tmp_path, server.url, auth.token("olivia"))
    source = tmp_path / "beach photo.jpg"
    checksum = random_file(source, 3 * MiB + 5)
    put_done = ok(run(env, "put", str(source), "photos/2026/"))
    assert put_done.stdout.split() == ["photos/2026/beach", "photo.jpg", str(3 * MiB + 5), checksum]
    assert put_done.stderr == ""  # not a terminal: no progress bar
    log = access_lines(server)
    assert [e["status"] for e in log if e["method"] == "PUT"] == [201]  # one PUT below the part size
    listing = ok(run(env, "ls", "photos/2026/")).stdout.splitlines()
    assert len(listing) == 1 and listing[0].split()[0] == str(3 * MiB + 5)
    assert listing[0].endswith("  2026/beach photo.jpg")
    assert ok(run(env, "ls")).stdout.split() == ["photos", "olivia", "private"]
    url = ok(run(env, "presign", "photos/2026/beach photo.jpg", "--expires", "60")).stdout.strip()
    assert hashlib.sha256(requests.get(url, timeout=30).content).hexdigest() == checksum
    dest = tmp_path / "out"
    dest.mkdir()
    assert ok(run(env, "get", "photos/2026/beach photo.jpg", str(dest))).stdout.strip() == str(
        dest / "beach photo.jpg")
    assert hashlib.sha256((dest / "beach photo.jpg").read_bytes()).hexdigest() == checksum
    assert sorted(os.listdir(dest)) == ["beach photo.jpg"]  # no temporary file or state left behind
    assert ok(run(env, "rm", "photos/2026/beach photo.jpg")).stdout.strip() == "deleted photos/2026/beach photo.jpg"
    assert ok(run(env, "ls", "photos")).stdout == ""
    assert ok(run(env, "-q", "ls", "photos")).stdout == ""


def upload_parts(server: GunicornServer, upload_id: str, start: int = 0) -> list[tuple[int, int]]:
    """(part number, status) of every part PUT of the upload the server logged."""
    pattern = re.compile(rf"/uploads/{re.escape(upload_id)}/parts/(\d+)$")
    return [(int(m.group(1)), e["status"]) for e in access_lines(server, start)
            if e["method"] == "PUT" and (m := pattern.search(e["path"]))]


@STORAGE
def test_a_300_mib_upload_interrupted_and_resumed_sends_no_part_twice(server, storage, auth, tmp_path):
    make_bucket(storage, "videos", owner="olivia", visibility="private")
    token = auth.token("olivia")
    headers = {"Authorization": f"Bearer {token}"}
    env = environment(tmp_path, server.url, token, STORAGE_CLIENT_PART_SIZE="16MiB")
    source = tmp_path / "film.mkv"
    size = 300 * MiB
    checksum = random_file(source, size)
    parts = -(-size // (16 * MiB))  # 19: eighteen of 16 MiB and the rest

    first = subprocess.Popen([str(CLIENT), "put", str(source), "videos/film.mkv", "-j", "2"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    state_dir = tmp_path / "cache" / "storage-client" / "uploads"
    state_file = wait_until(lambda: next(iter(state_dir.glob("*.json")), None), message="no upload state")
    upload_id = json.loads(state_file.read_text())["upload_id"]
    url = f"{server.url}/api/v1/buckets/videos/uploads/{upload_id}"

    def listed() -> list[int]:
        return sorted(p["part_number"] for p in requests.get(url, headers=headers, timeout=30).json()["parts"])

    wait_until(lambda: len(listed()) >= 5, message="parts never arrived")
    first.send_signal(signal.SIGKILL)  # the network, the laptop or the person: it stops mid-part
    first.wait(30)
    # parts already in flight may still land: wait until the server's list is still
    before = listed()
    while True:
        time.sleep(1.0)
        now = listed()
        if now == before:
            break
        before = now
    assert 5 <= len(before) < parts, before
    log_offset = len(server.log.read_text(errors="replace"))

    second = ok(run(env, "put", str(source), "videos/film.mkv", "-j", "2"))
    assert second.stdout.split() == ["videos/film.mkv", str(size), checksum]
    resent = [n for n, status in upload_parts(server, upload_id, log_offset)]
    assert sorted(resent) == sorted(set(range(1, parts + 1)) - set(before))  # only the missing ones, once each
    stored = collections.Counter(n for n, status in upload_parts(server, upload_id) if status == 200)
    assert stored == {n: 1 for n in range(1, parts + 1)}  # no part was stored twice
    assert not list(state_dir.glob("*.json"))  # the state goes with the upload
    listing = requests.get(f"{server.url}/api/v1/buckets/videos/objects", headers=headers, timeout=30).json()
    assert [(o["key"], o["size"], o["checksum"]) for o in listing["objects"]] == [("videos/film.mkv"[7:], size,
                                                                                   checksum)]


@STORAGE
def test_a_changed_file_starts_a_new_upload(server, storage, auth, tmp_path):
    make_bucket(storage, "videos", owner="olivia", visibility="private")
    token = auth.token("olivia")
    env = environment(tmp_path, server.url, token, STORAGE_CLIENT_PART_SIZE="5MiB")
    source = tmp_path / "clip.bin"
    random_file(source, 12 * MiB)
    state_dir = tmp_path / "cache" / "storage-client" / "uploads"
    # an interrupted upload of an earlier version of the file
    old = requests.post(f"{server.url}/api/v1/buckets/videos/uploads", json={"key": "clip.bin"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["upload_id"]
    from storage_core.client import transfer

    state_dir.mkdir(parents=True)
    state = state_dir / transfer.upload_state_path(server.url, "videos", "clip.bin", source).name
    state.write_text(json.dumps({"size": 1, "mtime_ns": 1, "part_size": 5 * MiB, "upload_id": old}))
    checksum = random_file(source, 12 * MiB)
    assert ok(run(env, "put", str(source), "videos/clip.bin")).stdout.split()[-1] == checksum
    assert requests.get(f"{server.url}/api/v1/buckets/videos/uploads/{old}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 404  # aborted


# ---- downloads (both profiles) -----------------------------------------------------------------------


@pytest.fixture
def movie(storage) -> tuple[bytes, str]:
    make_bucket(storage, "movies", owner="olivia", visibility="private", charged_read_quota=0)
    data = os.urandom(24 * MiB + 777)
    stored = put(storage, "movies", "night/sky.mov", data)
    return data, stored["checksum"]


def test_a_download_cut_mid_body_resumes_with_range_and_if_range(server, storage, auth, tmp_path, movie):
    data, _checksum = movie
    proxy = FaultyProxy(server.port, after_bytes=5 * MiB, mode="cut")
    try:
        env = environment(tmp_path, proxy.url, auth.token("olivia"))
        dest = tmp_path / "sky.mov"
        ok(run(env, "get", "movies/night/sky.mov", str(dest), "-j", "1"))
    finally:
        proxy.stop()
    assert proxy.faults == 1 and proxy.connections >= 2
    assert dest.read_bytes() == data
    assert not (tmp_path / "sky.mov.part").exists() and not (tmp_path / "sky.mov.part.json").exists()
    # the cut read is logged when the server sees the connection go, which may be after the second one
    gets = wait_until(lambda: (found := [e for e in access_lines(server) if e["method"] == "GET"
                                         and e["path"].startswith("/api/")]) and len(found) == 2 and found,
                      message="two reads were not logged")
    assert [e["status"] for e in gets] == [206, 206]  # the whole range, then the rest with If-Range
    sent = [e["content_bytes"] for e in gets]
    assert all(n < len(data) for n in sent) and sum(sent) >= len(data)
    records = wait_until(lambda: ((r := records_of(storage, "movies")) and len(r) == 2
                                  and r[0].read_size < len(data) and r) or None,
                         message="the cut read was not refunded")
    # what was charged is what the server sent: the part lost in the cut is at most the sockets' buffers
    assert len(data) <= sum(r.read_size for r in records) < len(data) + 8 * MiB
    assert records[1].read_size in sent  # the resumed read: charged what it sent, the rest of the file


def test_a_killed_download_resumes_on_the_next_run(server, storage, auth, tmp_path, movie):
    data, _checksum = movie
    dest = tmp_path / "sky.mov"
    proxy = FaultyProxy(server.port, after_bytes=9 * MiB, mode="stall")
    try:
        env = environment(tmp_path, proxy.url, auth.token("olivia"))
        first = subprocess.Popen([str(CLIENT), "get", "movies/night/sky.mov", str(dest), "-j", "1"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        state = tmp_path / "sky.mov.part.json"

        def written() -> int:
            try:
                return sum(end - start for start, end in json.loads(state.read_text())["done"])
            except (OSError, ValueError, KeyError):
                return 0

        wait_until(lambda: written() >= 6 * MiB, message="the first run wrote nothing")
        time.sleep(1.0)  # its last state flush
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        kept = written()
    finally:
        proxy.stop()
    assert not dest.exists() and (tmp_path / "sky.mov.part").exists()
    # the server logs the first run's read once it has seen the connection go (the proxy closed it)
    wait_until(lambda: any(e["method"] == "GET" and e["path"].startswith("/api/") for e in access_lines(server)),
               timeout=40, message="the first run's read never ended on the server")
    log_offset = len(server.log.read_text(errors="replace"))
    ok(run(environment(tmp_path, server.url, auth.token("olivia")), "get", "movies/night/sky.mov", str(dest)))
    assert dest.read_bytes() == data
    rerun = [e for e in access_lines(server, log_offset) if e["method"] == "GET" and e["path"].startswith("/api/")]
    # four ranges (-j 4 by default) of only what the first run had not written
    assert [e["status"] for e in rerun] == [206] * 4
    assert sum(e["content_bytes"] for e in rerun) == len(data) - kept


def test_parallel_ranges_give_the_plain_download(server, storage, auth, tmp_path, movie):
    data, checksum = movie
    env = environment(tmp_path, server.url, auth.token("olivia"))
    ok(run(env, "get", "movies/night/sky.mov", str(tmp_path / "plain.mov"), "-j", "1"))
    ok(run(env, "get", "--checksum", checksum, str(tmp_path / "parallel.mov"), "-j", "8"))
    assert (tmp_path / "plain.mov").read_bytes() == (tmp_path / "parallel.mov").read_bytes() == data
    records = records_of(storage, "movies")
    assert records[0].read_size == len(data)  # the plain download: one read of everything
    assert len(records) == 1 + 8 and sum(r.read_size for r in records[1:]) == len(data)  # eight ranges, no overlap
    gets = [e for e in access_lines(server) if e["method"] == "GET" and e["path"].startswith("/api/")]
    assert [e["status"] for e in gets] == [206] * 9


def test_a_download_whose_bytes_do_not_match_is_not_renamed_into_place(server, storage, auth, tmp_path, movie):
    _data, _checksum = movie
    env = environment(tmp_path, server.url, auth.token("olivia"))
    wrong = "0" * 64
    done = run(env, "get", "--checksum", wrong, str(tmp_path / "x.mov"))
    assert done.returncode == 1 and done.stderr.startswith("storage-client: ") and not (tmp_path / "x.mov").exists()
    # the bytes of one object checked against another's sha256: refused, nothing left
    from storage_core.client import api as client_api
    from storage_core.client import transfer

    session = client_api.Api(server.url, auth.token("olivia"))
    try:
        with pytest.raises(client_api.ApiError, match="checksum mismatch"):
            transfer.download(session, client_api.object_path("movies", "night/sky.mov"), {}, str(tmp_path / "y.mov"),
                              "y.mov", jobs=2, show_progress=False, expected_checksum="1" * 64)
    finally:
        session.close()
    assert not any(name.startswith("y.mov") for name in os.listdir(tmp_path))


# ---- quota and records (both profiles) -----------------------------------------------------------------


def seed_records(storage, bucket: str, count: int) -> None:
    with storage.session_factory()() as session, session.begin():
        bucket_id = session.scalar(select(Bucket.id).where(Bucket.name == bucket))
        session.add_all([
            ReadRecord(bucket_id=bucket_id, year_month="2026-11", object_name=f"dir/o,{i} \"x\"", object_id=i,
                       checksum=f"{i:064x}", account=f"acct{i % 3}",
                       timestamp_us=1_790_000_000_000_000 + (i // 4) * 1_000_000, read_size=i + 1)
            for i in range(count)
        ])


def test_quota_and_records_print_what_the_api_says(server, storage, auth, tmp_path, movie):
    data, _checksum = movie
    storage.bucket_service().update("movies", {"charged_read_quota": 10 * MiB}, DEVELOPMENT_ADMIN)
    token = auth.token("olivia")
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{server.url}/api/v1/buckets/movies/objects/night/sky.mov", headers=headers,
                        timeout=60).status_code == 200
    env = environment(tmp_path, server.url, token)
    api_quota = requests.get(f"{server.url}/api/v1/buckets/movies/read-quota", headers=headers, timeout=30).json()
    assert json.loads(ok(run(env, "quota", "movies", "--json")).stdout) == api_quota
    text = ok(run(env, "quota", "movies")).stdout
    lines = {line.split("  ")[0]: line for line in text.splitlines()[1:]}
    assert re.split(r"\s{2,}", lines["charged"]) == [
        "charged", f"{10 * MiB} (10.0 MiB)", f"{10 * MiB} (10.0 MiB)", "0 (0 B)"]
    monthly = re.split(r"\s{2,}", lines["monthly free"])
    assert [int(cell.split()[0]) for cell in monthly[1:]] == [
        api_quota["monthly_free_quota_size"], api_quota["monthly_free_consumed_size"],
        api_quota["monthly_free_quota_size"] - api_quota["monthly_free_consumed_size"]]
    one_time = re.split(r"\s{2,}", lines["one-time free"])
    assert one_time[1] == "-" and [int(cell.split()[0]) for cell in one_time[2:]] == [
        api_quota["free_consumed_size"], api_quota["sp_free_quota_size"]]
    total = re.split(r"\s{2,}", lines["total"])
    assert [int(cell.split()[0]) for cell in total[1:]] == [api_quota["consumed_size"], api_quota["remain_quota_size"]]
    assert api_quota["consumed_size"] == len(data)
    assert ok(run(env, "quota", "movies", "--month", "2020-01", "--json")).stdout.count('"consumed_size": 0') == 1

    # more records than one page (1000): every page, in order, as the API pages them
    seed_records(storage, "movies", 2345)
    api_rows, cursor = [], None
    while True:
        params = {"max_records": 1000, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{server.url}/api/v1/buckets/movies/read-records", params=params, headers=headers,
                            timeout=30).json()
        api_rows += page["read_records"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(api_rows) == 2346
    as_json = [json.loads(line) for line in ok(run(env, "records", "movies", "--json")).stdout.splitlines()]
    assert as_json == api_rows
    as_csv = list(csv.reader(io.StringIO(ok(run(env, "records", "movies", "--csv")).stdout, newline="")))
    assert as_csv[0] == ["object_name", "object_id", "checksum", "account", "timestamp_us", "read_size"]
    assert as_csv[1:] == [[r["object_name"], str(r["object_id"]), r["checksum"], r["account"],
                           str(r["timestamp_us"]), str(r["read_size"])] for r in api_rows]
    plain = ok(run(env, "records", "movies")).stdout.splitlines()
    assert len(plain) == len(api_rows) and plain[0].endswith('  dir/o,0 "x"') and "  acct0  1  0  " in plain[0]
    # a window: ISO times in UTC, [since, until)
    since, until = (dt.datetime.fromtimestamp(1_790_000_000 + s, dt.UTC) for s in (5, 7))
    window = ok(run(env, "records", "movies", "--json", "--since", since.isoformat().replace("+00:00", "Z"),
                    "--until", until.replace(tzinfo=None).isoformat())).stdout.splitlines()
    expected = [r for r in api_rows if 1_790_000_005_000_000 <= r["timestamp_us"] < 1_790_000_007_000_000]
    assert [json.loads(line) for line in window] == expected and len(expected) == 8


# ---- exit status, configuration, progress -------------------------------------------------------------


def test_exit_status_and_the_problem_detail(server, storage, auth, tmp_path, movie):
    make_bucket(storage, "mallory-data", owner="mallory", visibility="private")
    make_bucket(storage, "empty-quota", owner="olivia", visibility="private", charged_read_quota=0,
                monthly_free_read_quota=0, free_read_quota=0)
    put(storage, "empty-quota", "k.bin", b"z" * 1000)
    env = environment(tmp_path, server.url, auth.token("olivia"))
    missing = run(env, "get", "movies/no/such.mov", str(tmp_path / "x"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr, missing.stderr
    forbidden = run(env, "quota", "mallory-data")
    assert forbidden.returncode == 1 and "olivia may not manage bucket 'mallory-data'" in forbidden.stderr
    refused = run(env, "get", "empty-quota/k.bin", str(tmp_path / "k.bin"))
    assert refused.returncode == 1 and "not enough read quota" in refused.stderr and "retry after" in refused.stderr
    assert not (tmp_path / "k.bin").exists()
    anonymous = run(environment(tmp_path, server.url, None), "records", "movies")
    assert anonymous.returncode == 1 and "authentication required" in anonymous.stderr
    unreachable = run(environment(tmp_path, "http://127.0.0.1:9", None), "quota", "movies")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    for args in (["get"], ["put", str(tmp_path / "nope"), "movies/k"], ["frobnicate"], ["quota"],
                 ["records", "movies", "--since", "yesterday"], ["get", "movies"], ["rm", "movies"],
                 ["records", "movies", "--csv", "--json"]):
        done = run(env, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "usage:" in done.stderr or "error:" in done.stderr
    no_server = run({k: v for k, v in env.items() if k != "STORAGE_URL"}, "ls")
    assert no_server.returncode == 2 and "STORAGE_URL" in no_server.stderr
    small_parts = run({**env, "STORAGE_CLIENT_PART_SIZE": "1MiB"}, "ls", "movies")
    assert small_parts.returncode == 2 and "5MiB" in small_parts.stderr
    help_text = run(env, "get", "--help")
    assert help_text.returncode == 0 and "--checksum" in help_text.stdout and "-j N" in help_text.stdout


def test_configure_writes_a_file_only_its_owner_reads(server, storage, auth, tmp_path, movie):
    env = environment(tmp_path, server.url, None)
    del env["STORAGE_URL"]
    config = tmp_path / "config" / "storage-client" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    config.chmod(0o644)
    token = auth.token("olivia")
    done = subprocess.run([str(CLIENT), "configure", "--url", server.url, "--token", "-"], env=env, input=token + "\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": server.url, "token": token}
    assert token not in done.stdout + done.stderr
    # the file is enough to work; the environment wins over it
    assert json.loads(ok(run(env, "quota", "movies", "--json")).stdout)["bucket"] == "movies"
    overridden = run({**env, "STORAGE_TOKEN": auth.token("mallory")}, "quota", "movies")
    assert overridden.returncode == 1 and "mallory may not" in overridden.stderr


def test_progress_bars_only_on_a_terminal(server, storage, auth, tmp_path, movie):
    env = environment(tmp_path, server.url, auth.token("olivia"), COLUMNS="120", TERM="xterm")

    def on_a_terminal(*args: str) -> tuple[int, str]:
        leader, follower = pty.openpty()
        process = subprocess.Popen([str(CLIENT), *args], env=env, stdout=subprocess.PIPE, stderr=follower,
                                   stdin=subprocess.DEVNULL)
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the client exited and closed its end
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
        return process.wait(60), output.decode(errors="replace")

    status, shown = on_a_terminal("get", "movies/night/sky.mov", str(tmp_path / "a.mov"))
    assert status == 0
    assert "get a.mov" in shown and "24.0/24.0 MiB" in shown and "/s" in shown  # bytes, rate, time left
    status, shown = on_a_terminal("-q", "get", "movies/night/sky.mov", str(tmp_path / "b.mov"))
    assert status == 0 and shown == ""
    piped = ok(run(env, "get", "movies/night/sky.mov", str(tmp_path / "c.mov")))
    assert piped.stderr == ""


@STORAGE
def test_restore_on_a_server_without_nearline_locations(server, storage, auth, tmp_path, movie):
    _data, checksum = movie
    env = environment(tmp_path, server.url, auth.token("olivia"))
    has_restore = "/api/v1/files/restore" in requests.get(server.url + "/openapi.json", timeout=30).json()["paths"]
    done = run(env, "restore", checksum)
    if has_restore:  # an online file is available at once
        assert done.returncode == 0 and done.stdout.split()[:2] == [checksum, "available"]
    else:
        assert done.returncode == 1 and "restore is not supported by this server" in done.stderr

