"""Scale-out (docs/deployment.md): the settings a deployment behind poolers needs, and several downloader
instances behind a real nginx sharing one PostgreSQL database."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from storage_core.db import make_engine
from storage_core.models import BucketTraffic, ReadRecord
from storage_core.services.resolve import BY_KEY
from storage_core.settings import Settings
from tests.conftest import KiB, make_bucket, put
from tests.support.auth import TEST_JWT_SECRET
from tests.support.loadbalancer import Nginx, PgBouncer
from tests.support.servers import GunicornServer

DOWNLOADER = {"STORAGE_PROFILES": "downloader"}


def _prepared_after_resolve(settings, prepare: bool) -> tuple[int, list]:
    """Rows of one resolve on a fresh engine, and how many statements its server session then holds prepared."""
    engine = make_engine(settings.replace(db_prepare=prepare), autocommit=True)
    try:
        with engine.connect() as conn:
            rows = BY_KEY.all(conn, bucket="bucket", key="k", account="owner", access_key="")
            held = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
    finally:
        engine.dispose()
    return held, rows


@pytest.mark.postgresql(reason="server-side prepared statements are PostgreSQL's")
def test_resolve_is_a_plain_statement_when_db_prepare_is_off(settings, storage, local_location):
    """STORAGE_DB_PREPARE=0 (for a pooler in transaction mode): the resolve leaves nothing prepared on the
    server session, and gives the very rows the prepared one gives."""
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * 100)
    prepared, rows_prepared = _prepared_after_resolve(settings, True)
    plain, rows_plain = _prepared_after_resolve(settings, False)
    assert prepared == 1 and plain == 0
    assert len(rows_plain) == 1 and [tuple(r) for r in rows_plain] == [tuple(r) for r in rows_prepared]


@pytest.mark.slow
@pytest.mark.postgresql(reason="the setting is about PostgreSQL's prepared statements")
def test_charged_downloads_with_db_prepare_off(settings, storage, local_location):
    """A real downloader with STORAGE_DB_PREPARE=0 serves and charges exactly as with prepared statements."""
    make_bucket(storage, charged_read_quota=10 * 4 * KiB, monthly_free_read_quota=0, free_read_quota=0)
    data = bytes(range(256)) * 16
    put(storage, "bucket", "small", data)
    server = GunicornServer(settings, workers=1, bootstrap="bootstrap_downloader",
                            extra_env={**DOWNLOADER, "STORAGE_DB_PREPARE": "0"})
    try:
        with requests.Session() as session:
            answers = [session.get(f"{server.url}/api/v1/buckets/bucket/objects/small", timeout=30)
                       for _ in range(12)]
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200] * 10 + [429] * 2
    assert all(a.content == data for a in answers[:10])
    with storage.session_factory()() as session:
        assert session.scalar(select(BucketTraffic.charged_consumed_size)) == 10 * 4 * KiB
        assert session.scalar(select(func.count()).select_from(ReadRecord)) == 10



@pytest.mark.slow
@pytest.mark.postgresql(reason="PgBouncer pools PostgreSQL connections")
def test_downloads_through_pgbouncer_in_transaction_mode(settings, storage, local_location):
    """Behind PgBouncer in transaction mode (each transaction on any of its few server connections) with
    STORAGE_DB_PREPARE=0: 300 reads from 12 clients against a quota for exactly 200 give 200 with the right
    bytes and 100 refusals, consumption and records exact. (With prepared resolves, a fifth to a half of
    such reads failed: a statement prepared on one server connection is already there, or missing, on the
    next; docs/deployment.md.)"""
    size = 4 * KiB
    make_bucket(storage, charged_read_quota=200 * size, monthly_free_read_quota=0, free_read_quota=0)
    data = os.urandom(size)
    put(storage, "bucket", "k", data)
    # the service's statement and lock timeouts (STORAGE_DB_TIMEOUT), which PgBouncer drops from the startup packet
    bouncer = PgBouncer(pool_size=4, connect_query="SET statement_timeout = 10000; SET lock_timeout = 10000")
    server = None
    try:
        server = GunicornServer(settings.replace(database_url=bouncer.url_for(settings.database_url)), workers=2,
                                bootstrap="bootstrap_downloader", extra_env={**DOWNLOADER, "STORAGE_DB_PREPARE": "0"})

        def reads(_: int) -> Counter:
            seen: Counter = Counter()
            with requests.Session() as session:
                for _ in range(25):
                    response = session.get(f"{server.url}/api/v1/buckets/bucket/objects/k", timeout=60)
                    seen[response.status_code, response.content == data] += 1
            return seen

        with ThreadPoolExecutor(12) as pool:
            seen = sum(pool.map(reads, range(12)), Counter())
    finally:
        if server is not None:
            server.stop()
        bouncer.stop()
    assert seen == {(200, True): 200, (429, False): 100}, seen
    with storage.session_factory()() as session:
        assert session.scalar(select(BucketTraffic.charged_consumed_size)) == 200 * size
        assert session.scalar(select(func.count()).select_from(ReadRecord)) == 200

# ---- three downloader instances behind nginx ------------------------------------------------------------

INSTANCES = 3


class Cluster:
    """``INSTANCES`` downloader services (gunicorn, 2 gevent workers each) on the suite's database, behind nginx."""

    def __init__(self, settings: Settings, root):
        with ThreadPoolExecutor(INSTANCES) as pool:
            self.instances = list(pool.map(
                lambda _: GunicornServer(settings, workers=2, bootstrap="bootstrap_downloader",
                                         extra_env={**DOWNLOADER, "STORAGE_DB_POOL_SIZE": "3"}),
                range(INSTANCES)))
        self.nginx = Nginx(root / "nginx", [f"127.0.0.1:{i.port}" for i in self.instances])
        self.url = self.nginx.url

    def served(self) -> list[float]:
        """200s of the download route counted by each live instance (its /metrics)."""
        counts = []
        for instance in self.instances:
            if instance.process.poll() is not None:
                counts.append(-1.0)
                continue
            text = requests.get(f"{instance.url}/metrics", timeout=10).text
            counts.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith("storage_http_requests_total{")
                              and 'status="200"' in line and "objects" in line))
        return counts

    def stop(self) -> None:
        self.nginx.stop()
        with ThreadPoolExecutor(INSTANCES) as pool:  # each waits for its keep-alive connections to close
            list(pool.map(lambda instance: instance.stop(), self.instances))


@pytest.fixture(scope="module")
def cluster(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    made = Cluster(Settings(database_url=database_url, data_dir=str(root / "var"), jwt_secret=TEST_JWT_SECRET), root)
    yield made
    made.stop()


@pytest.mark.slow
@pytest.mark.profile("downloader")
@pytest.mark.postgresql(reason="several instances share one database server")
def test_120_reads_through_nginx_against_a_quota_for_exactly_40(cluster, storage, local_location):
    """120 downloads at once through nginx, spread over three instances, against a bucket whose quota admits
    exactly 40: 40 succeed with the right bytes, 80 are refused, and the quota is consumed exactly."""
    size = 10_000
    make_bucket(storage, charged_read_quota=40 * size, monthly_free_read_quota=0, free_read_quota=0)
    data = os.urandom(size)
    put(storage, "bucket", "obj", data)
    before = cluster.served()
    barrier = threading.Barrier(120)

    def download(_: int) -> tuple[int, bytes | str]:
        barrier.wait()
        response = requests.get(f"{cluster.url}/api/v1/buckets/bucket/objects/obj", timeout=60)
        return response.status_code, response.content if response.status_code == 200 else response.json()["code"]

    with ThreadPoolExecutor(120) as pool:
        results = list(pool.map(download, range(120)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 40, 429: 80}, statuses
    assert all(body == data for status, body in results if status == 200)
    assert all(body == "QuotaExceeded" for status, body in results if status == 429)
    served = [after - b for after, b in zip(cluster.served(), before, strict=True)]
    assert sum(served) == 40 and sum(1 for n in served if n > 0) >= 2, served  # several instances charged
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert (traffic.charged_consumed_size, traffic.monthly_free_consumed_size, traffic.free_consumed_size) \
            == (40 * size, 0, 0)
        assert session.scalar(select(func.count()).select_from(ReadRecord)) == 40
        assert session.scalar(select(func.sum(ReadRecord.read_size))) == 40 * size


@pytest.mark.slow
@pytest.mark.profile("downloader")
@pytest.mark.postgresql(reason="several instances share one database server")
def test_stopping_one_instance_fails_no_request(cluster, storage, local_location):
    """SIGTERM to one of the three instances while clients download through nginx without pause, three slow
    downloads in flight (one on each instance): the stopped instance finishes its open downloads (gunicorn's
    graceful shutdown), nginx sends the next requests to the others (``proxy_next_upstream``), and no request
    fails; every 200 is charged once."""
    make_bucket(storage, charged_read_quota=1 << 40)
    # big: more than the socket buffers between the service and the client hold, so that its sender is still
    # writing it when the instance is told to stop
    small, big = os.urandom(64 * KiB), os.urandom(12 * 1024 * KiB)
    put(storage, "bucket", "small", small)
    put(storage, "bucket", "big", big)
    url = f"{cluster.url}/api/v1/buckets/bucket/objects"
    failures: list[str] = []
    done: list[int] = []
    slow_ok: list[bool] = []
    stop, stopping = threading.Event(), threading.Event()

    def slow_download(started: threading.Event) -> None:
        """Reads slowly until the instance is told to stop, then at full speed; a small receive buffer (and
        so a small TCP window) keeps most of the body at the instance's end while it is read slowly."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        try:
            sock.connect(("127.0.0.1", cluster.nginx.port))
            conn = http.client.HTTPConnection("127.0.0.1", cluster.nginx.port, timeout=60)
            conn.sock = sock
            conn.request("GET", "/api/v1/buckets/bucket/objects/big")
            response = conn.getresponse()
            started.set()
            digest = hashlib.sha256()
            while chunk := response.read(64 * KiB):
                digest.update(chunk)
                if not stopping.is_set():
                    time.sleep(0.02)
            slow_ok.append(response.status == 200 and digest.digest() == hashlib.sha256(big).digest())
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"slow: {exc!r}")
        finally:
            started.set()
            sock.close()

    def keep_downloading() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.get(f"{url}/small", timeout=30)
                    if response.status_code != 200 or response.content != small:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                    else:
                        done.append(1)
                except requests.RequestException as exc:
                    failures.append(repr(exc))

    threads = []
    for _ in range(INSTANCES):  # started one after another: round robin gives each instance one
        started = threading.Event()
        threads.append(threading.Thread(target=slow_download, args=(started,)))
        threads[-1].start()
        started.wait(10)
    threads += [threading.Thread(target=keep_downloading) for _ in range(4)]
    for thread in threads[INSTANCES:]:
        thread.start()
    time.sleep(0.5)
    victim = cluster.instances[1]
    victim.process.send_signal(15)  # SIGTERM: gunicorn stops accepting, open requests finish
    time.sleep(0.2)
    stopping.set()
    victim.process.wait(30)
    before_stop = len(done)
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert slow_ok == [True] * INSTANCES
    assert victim.process.returncode == 0
    victim_address = f"127.0.0.1:{victim.port}"
    assert any(uri.endswith("/big") and tried == [victim_address] for uri, _, tried in cluster.nginx.served_by())
    assert before_stop > 0 and len(done) > before_stop  # downloads went on after the stop, on the two others
    assert min(cluster.served()[i] for i in (0, 2)) > 0
    with storage.session_factory()() as session:
        sizes = Counter(session.scalars(select(ReadRecord.read_size)))
    assert sizes == {len(small): len(done), len(big): INSTANCES}
