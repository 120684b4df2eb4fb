"""Read quota (both profiles): charge order, month rollover, 429, refunds, record pages, failing closed."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import socket
import time

import pytest
from dependency_injector import providers
from sqlalchemy import create_engine, select

from storage_core.app import create_app
from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.models import Bucket, BucketTraffic, ReadRecord
from tests.conftest import make_bucket, put

NOV = int(dt.datetime(2026, 11, 15, tzinfo=dt.UTC).timestamp() * 1_000_000)
DEC = int(dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp() * 1_000_000)


class Clock:
    """A clock the test moves; the quota service takes it instead of the system time."""

    def __init__(self, now_us: int):
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture
def clock(container):
    clock = Clock(NOV)
    container.clock.override(providers.Object(clock))
    return clock


def quota(client, month: str | None = None) -> dict:
    url = "/api/v1/buckets/bucket/read-quota" + (f"?year_month={month}" if month else "")
    response = client.get(url)
    assert response.status_code == 200, response.json
    return response.json


def test_charge_order_charged_then_monthly_then_one_time(client, storage, local_location, clock):
    make_bucket(storage, charged_read_quota=100, monthly_free_read_quota=50, free_read_quota=30)
    put(storage, "bucket", "k", os.urandom(60))
    url = "/api/v1/buckets/bucket/objects/k"
    assert client.get(url).status_code == 200  # 60: charged 60
    q = quota(client)
    assert (q["charged_consumed_size"], q["monthly_free_consumed_size"], q["free_consumed_size"]) == (60, 0, 0)
    assert client.get(url).status_code == 200  # 60: charged 40, monthly 20
    q = quota(client)
    assert (q["charged_consumed_size"], q["monthly_free_consumed_size"], q["free_consumed_size"]) == (100, 20, 0)
    assert client.get(url).status_code == 200  # 60: monthly 30, one-time 30
    q = quota(client)
    assert (q["charged_consumed_size"], q["monthly_free_consumed_size"], q["free_consumed_size"]) == (100, 50, 30)
    assert q["sp_free_quota_size"] == 0 and q["remain_quota_size"] == 0 and q["consumed_size"] == 180
    refused = client.get(url)
    assert refused.status_code == 429 and refused.json["code"] == "QuotaExceeded"
    assert quota(client)["consumed_size"] == 180  # nothing charged for the refusal
    # nothing is left at all, so even a one-byte range is refused
    assert client.get(url, headers={"Range": "bytes=0-0"}).status_code == 429
    assert [r.read_size for r in read_records(storage)] == [60, 60, 60]


def read_records(storage) -> list[ReadRecord]:
    with storage.session_factory()() as session:
        return list(session.scalars(select(ReadRecord).order_by(ReadRecord.timestamp_us, ReadRecord.id)))


def test_month_rollover_renews_monthly_quotas_and_carries_the_one_time_rest(client, storage, local_location,
                                                                           clock):
    make_bucket(storage, charged_read_quota=10, monthly_free_read_quota=10, free_read_quota=25)
    put(storage, "bucket", "k", b"x" * 25)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200  # 10 + 10 + 5 of one-time
    assert quota(client, "2026-11")["sp_free_quota_size"] == 20
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 429  # 0 + 0 + 20 < 25

    # a month with no read yet already shows what it will start with
    december = quota(client, "2026-12")
    assert december["sp_free_quota_size"] == 20 and december["consumed_size"] == 0
    clock.now_us = DEC
    assert quota(client)["year_month"] == "2026-12"
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200  # 10 + 10 + 5
    q = quota(client, "2026-12")
    assert (q["charged_consumed_size"], q["monthly_free_consumed_size"], q["free_consumed_size"]) == (10, 10, 5)
    assert q["sp_free_quota_size"] == 15
    assert quota(client, "2026-11")["consumed_size"] == 25  # November is closed as it was
    assert [r.year_month for r in read_records(storage)] == ["2026-11", "2026-12"]


def test_quota_change_applies_to_the_current_month(client, storage, local_location, clock):
    make_bucket(storage, charged_read_quota=0, monthly_free_read_quota=0, free_read_quota=0)
    put(storage, "bucket", "k", b"x" * 10)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 429
    clock.now_us = int(time.time() * 1_000_000)
    storage.bucket_service().update("bucket", {"charged_read_quota": 10}, DEVELOPMENT_ADMIN)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 429


def test_refund_when_the_client_disconnects_mid_body(live_server, storage, local_location, engine):
    make_bucket(storage, charged_read_quota=1 << 40)
    size = 16 * 1024 * 1024
    put(storage, "bucket", "big", os.urandom(size))
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /api/v1/buckets/bucket/objects/big HTTP/1.1\r\nHost: x\r\n\r\n")
        received = sock.recv(65536)
        assert b"200 OK" in received.split(b"\r\n")[0]
        # the head and the body are separate writes: take some content too, so there is something to keep
        while len(received) < 8 * 1024:
            received += sock.recv(65536)
    # the server notices on its next writes, closes the body and refunds what the client did not take
    deadline = time.time() + 20
    while time.time() < deadline:
        records = read_records(storage)
        if records and records[0].read_size < size:
            break
        time.sleep(0.1)
    assert len(records) == 1 and 0 < records[0].read_size < size
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
    assert traffic.charged_consumed_size == records[0].read_size
    assert records[0].charged_size == records[0].read_size


def test_record_pages_never_skip_or_repeat_with_shared_timestamps(client, storage, local_location):
    make_bucket(storage)
    with storage.session_factory()() as session, session.begin():
        bucket_id = session.scalar(select(Bucket.id).where(Bucket.name == "bucket"))
        session.add_all([
            ReadRecord(bucket_id=bucket_id, year_month="2026-11", object_name=f"o{i}", object_id=i,
                       checksum="0" * 64, account="a", timestamp_us=1000 + (i // 100), read_size=i)
            for i in range(350)
        ])
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/buckets/bucket/read-records?max_records=7&start_timestamp_us=1000&end_timestamp_us=1003"
        page = client.get(url + (f"&cursor={cursor}" if cursor else "")).json
        seen += [r["read_size"] for r in page["read_records"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            assert page["next_start_timestamp_us"] == 0
            break
        assert page["next_start_timestamp_us"] == page["read_records"][-1]["timestamp_us"]
    assert seen == list(range(300))  # [1000, 1003) holds the first 300, in time then insertion order
    assert pages == 43
    window = client.get("/api/v1/buckets/bucket/read-records?start_timestamp_us=1003&end_timestamp_us=1004").json
    assert [r["read_size"] for r in window["read_records"]] == list(range(300, 350))[:100]
    first = window["read_records"][0]
    assert set(first) == {"object_name", "object_id", "checksum", "account", "timestamp_us", "read_size"}


@pytest.mark.parametrize("query", [
    "read-quota?year_month=2026-13", "read-quota?year_month=2026-1", "read-quota?year_month=abcd-ef",
    "read-records?start_timestamp_us=10&end_timestamp_us=5", "read-records?max_records=-1",
    "read-records?max_records=0", "read-records?max_records=1001", "read-records?cursor=nonsense!",
    "read-records?start_timestamp_us=x", "read-records?format=xml", "read-quota/history?months=0",
    "read-quota/history?months=121", "read-quota/history?months=x",
])
def test_bad_query_parameters_are_400(client, storage, query):
    make_bucket(storage)
    response = client.get(f"/api/v1/buckets/bucket/{query}")
    assert response.status_code == 400, response.json
    assert response.json["code"] == "InvalidArgument"


def test_quota_of_unknown_bucket_is_404(client, storage):
    assert client.get("/api/v1/buckets/nope/read-quota").status_code == 404
    assert client.get("/api/v1/buckets/nope/read-records").status_code == 404
    assert client.get("/api/v1/buckets/nope/read-records?format=csv").status_code == 404
    assert client.get("/api/v1/buckets/nope/read-quota/history").status_code == 404


def test_database_unreachable_fails_closed(settings, container, storage, local_location, auth):
    make_bucket(storage)
    put(storage, "bucket", "k", b"data")
    dead = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    container.engine.override(providers.Object(dead))
    container.autocommit_engine.override(providers.Object(dead))
    container.session_factory.reset()
    for name in ("quota_service", "resolver", "download_service", "availability_service"):
        getattr(container, name).reset()
    client = create_app(settings=settings, container=container).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = auth.admin["Authorization"]
    for response in (client.get("/api/v1/buckets/bucket/objects/k"),
                     client.get("/api/v1/buckets/bucket/read-quota"),
                     client.post("/api/v1/files/availability", json={"checksums": ["0" * 64]})):
        assert response.status_code == 503
        assert response.json["code"] == "DatabaseUnavailable"
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json["checks"]["database"].startswith("unavailable")


@pytest.mark.postgresql(reason="combined charges are PostgreSQL's (charge_together); SQLite charges one by one")
def test_combined_charges_admit_smallest_first_and_split_in_order(storage, local_location):
    from storage_core.services.quota import ReadRequest

    make_bucket(storage, charged_read_quota=10, monthly_free_read_quota=5, free_read_quota=3)
    quota = storage.quota_service()
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id))

    def request(size: int) -> tuple[ReadRequest, int]:
        return ReadRequest(bucket_id, "k", 1, "0" * 64, "a", size), NOV

    results = quota.charge_together((bucket_id, "2026-11"), [request(9), request(4), request(20), request(5)])
    charged = [(r.size, r.split.charged, r.split.monthly_free, r.split.free) if not isinstance(r, Exception)
               else None for r in results]
    # 18 bytes available: 4 then 5 then 9 fit (in that order), 20 does not
    assert charged == [(9, 1, 5, 3), (4, 4, 0, 0), None, (5, 5, 0, 0)]
    assert isinstance(results[2], Exception) and "20 bytes" in str(results[2])
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert (traffic.charged_consumed_size, traffic.monthly_free_consumed_size, traffic.free_consumed_size,
                traffic.free_quota_remaining) == (10, 5, 3, 0)
        assert sorted(session.scalars(select(ReadRecord.read_size))) == [4, 5, 9]
        # each charge knows its own record (ids are taken before the insert), as refunds need
        records = {r.id: (r.read_size, r.charged_size, r.monthly_free_size, r.free_size)
                   for r in session.scalars(select(ReadRecord))}
    assert records == {r.record_id: (r.size, r.split.charged, r.split.monthly_free, r.split.free)
                       for r in results if not isinstance(r, Exception)}


@pytest.mark.postgresql(reason="combined charges are PostgreSQL's (charge_together); SQLite charges one by one")
def test_a_failed_combined_charge_charges_nothing_and_leaves_no_open_transaction(storage, local_location,
                                                                                 engine):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from storage_core.services.quota import ReadRequest

    make_bucket(storage, charged_read_quota=100, monthly_free_read_quota=0, free_read_quota=0)
    quota = storage.quota_service()
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id))
    good = ReadRequest(bucket_id, "k", 1, "0" * 64, "a", 10)
    quota.charge(good)  # creates the month row
    too_long = ReadRequest(bucket_id, "k" * 2000, 1, "0" * 64, "a", 10)  # object_name is 1024 at most
    with pytest.raises(DBAPIError):
        quota.charge(too_long)  # the second round trip fails after the first locked the month row
    with engine.connect() as connection:
        idle_in_transaction = connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'")).scalar_one()
    assert idle_in_transaction == 0
    assert quota.charge(good).size == 10  # the lock was released: the next charge goes through
    with storage.session_factory()() as session:
        assert session.scalar(select(BucketTraffic.charged_consumed_size)) == 20
        assert sorted(session.scalars(select(ReadRecord.object_name))) == ["k", "k"]


@pytest.mark.postgresql(reason="combined charges are PostgreSQL's (charge_together); SQLite charges one by one")
def test_a_batch_the_charged_quota_covers_is_charged_in_one_statement(storage, local_location):
    from sqlalchemy import event

    from storage_core.services.quota import ReadRequest

    make_bucket(storage, charged_read_quota=100, monthly_free_read_quota=50, free_read_quota=50)
    quota = storage.quota_service()
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id))
    # creates the month row
    quota.charge_together((bucket_id, "2026-11"), [(ReadRequest(bucket_id, "first", 1, "0" * 64, "a", 1), NOV)])
    statements: list[str] = []
    event.listen(quota.autocommit_engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement))
    batch = [(ReadRequest(bucket_id, f"k{i}", i, "0" * 64, f"a{i}", size), NOV + i)
             for i, size in enumerate([30, 9, 60])]
    results = quota.charge_together((bucket_id, "2026-11"), batch)
    # 99 bytes of charged quota left: all three are charged quota only, decided and recorded in one round trip
    assert len(statements) == 1 and statements[0].startswith("WITH consumed AS (UPDATE bucket_traffic")
    assert [(r.size, r.split.charged, r.split.monthly_free, r.split.free) for r in results] == [
        (30, 30, 0, 0), (9, 9, 0, 0), (60, 60, 0, 0)]
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert (traffic.charged_consumed_size, traffic.monthly_free_consumed_size, traffic.free_consumed_size,
                traffic.free_quota_remaining) == (100, 0, 0, 50)
        records = {r.id: (r.object_name, r.object_id, r.account, r.timestamp_us, r.read_size, r.charged_size,
                          r.monthly_free_size, r.free_size) for r in session.scalars(select(ReadRecord))}
    # each charge knows its own record, as refunds need
    for i, result in enumerate(results):
        size = batch[i][0].size
        assert records[result.record_id] == (f"k{i}", i, f"a{i}", NOV + i, size, size, 0, 0)


@pytest.mark.postgresql(reason="combined charges are PostgreSQL's (charge_together); SQLite charges one by one")
def test_a_batch_the_charged_quota_does_not_cover_is_decided_on_the_locked_row(storage, local_location):
    from sqlalchemy import event

    from storage_core.services.quota import ReadRequest

    make_bucket(storage, charged_read_quota=10, monthly_free_read_quota=5, free_read_quota=0)
    quota = storage.quota_service()
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id))
    # creates the month row: 9 charged left
    quota.charge_together((bucket_id, "2026-11"), [(ReadRequest(bucket_id, "first", 1, "0" * 64, "a", 1), NOV)])
    statements: list[str] = []
    event.listen(quota.autocommit_engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement))

    def request(size: int) -> tuple[ReadRequest, int]:
        return ReadRequest(bucket_id, "k", 1, "0" * 64, "a", size), NOV

    results = quota.charge_together((bucket_id, "2026-11"), [request(6), request(6), request(3)])
    # 14 bytes left (9 charged, 5 monthly): 3 then 6 fit, the second 6 does not; the one-statement try
    # consumed nothing, the locked row decided
    assert [(r.size, r.split.charged, r.split.monthly_free) if not isinstance(r, Exception) else None
            for r in results] == [(6, 6, 0), None, (3, 3, 0)]
    assert len(statements) == 3
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert (traffic.charged_consumed_size, traffic.monthly_free_consumed_size) == (10, 0)
        assert sorted(session.scalars(select(ReadRecord.read_size))) == [1, 3, 6]
    # the month is now short of charged quota: the next batch goes to the locked row at once (2 round trips),
    # and is charged to the monthly free quota
    statements.clear()
    (charge,) = quota.charge_together((bucket_id, "2026-11"), [request(5)])
    assert (charge.split.charged, charge.split.monthly_free) == (0, 5)
    assert len(statements) == 2 and statements[0].startswith("BEGIN;")


@pytest.mark.postgresql(reason="combined charges are PostgreSQL's (charge_together); SQLite charges one by one")
def test_concurrent_batches_of_two_instances_across_both_charge_paths_are_exact(storage, local_location):
    """Two quota services (two instances) charge one bucket at once while its charged quota runs out, so batches
    go through the one-statement charge, its fallback and the locked row's split: nothing is spent twice."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from storage_core.accounting import Split
    from storage_core.errors import QuotaExceeded
    from storage_core.services.quota import QuotaService, ReadRequest

    make_bucket(storage, charged_read_quota=3000, monthly_free_read_quota=700, free_read_quota=300)
    first = storage.quota_service()
    second = QuotaService(storage.session_factory(), first.clock, first.autocommit_engine)
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id))
    sizes = [random.Random(i).randint(1, 40) for i in range(400)]  # 8 KB asked for, 4,000 bytes of quota

    def charge(i: int):
        try:
            return (first, second)[i % 2].charge(ReadRequest(bucket_id, f"k{i}", i, "0" * 64, "a", sizes[i]))
        except QuotaExceeded:
            return None

    with ThreadPoolExecutor(max_workers=48) as pool:
        charges = [c for c in pool.map(charge, range(400)) if c is not None]
    spent = sum((c.split for c in charges), Split())
    with storage.session_factory()() as session:
        traffic = session.scalar(select(BucketTraffic))
        assert (traffic.charged_consumed_size, traffic.monthly_free_consumed_size, traffic.free_consumed_size) == (
            spent.charged, spent.monthly_free, spent.free)
        assert traffic.free_quota_remaining == 300 - spent.free
        assert spent.charged <= 3000 and spent.monthly_free <= 700 and spent.free <= 300
        assert spent.total > 4000 - 40  # refused only when what was left could not pay for a read
        records = {r.id: (r.read_size, r.charged_size, r.monthly_free_size, r.free_size)
                   for r in session.scalars(select(ReadRecord))}
    assert records == {c.record_id: (c.size, c.split.charged, c.split.monthly_free, c.split.free) for c in charges}


def test_concurrent_charges_in_one_process_are_exact(storage, local_location):
    from concurrent.futures import ThreadPoolExecutor

    from storage_core.errors import QuotaExceeded
    from storage_core.services.quota import ReadRequest

    make_bucket(storage, charged_read_quota=1000, monthly_free_read_quota=0, free_read_quota=0)
    quota = storage.quota_service()
    with storage.session_factory()() as session:
        bucket_id = session.scalar(select(Bucket.id))

    def charge(_: int) -> bool:
        try:
            quota.charge(ReadRequest(bucket_id, "k", 1, "0" * 64, "a", 10))
            return True
        except QuotaExceeded:
            return False

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(charge, range(300)))
    assert outcomes.count(True) == 100
    with storage.session_factory()() as session:
        assert session.scalar(select(BucketTraffic.charged_consumed_size)) == 1000
        assert len(session.scalars(select(ReadRecord.id)).all()) == 100


def test_a_late_read_of_last_month_cannot_spend_the_carried_one_time_quota_again(client, storage, local_location,
                                                                                   clock):
    make_bucket(storage, charged_read_quota=10, monthly_free_read_quota=10, free_read_quota=25)
    put(storage, "bucket", "big", b"x" * 25)
    put(storage, "bucket", "small", b"y" * 5)
    assert client.get("/api/v1/buckets/bucket/objects/big").status_code == 200  # Nov: 10 + 10 + 5 one-time
    clock.now_us = DEC
    assert client.get("/api/v1/buckets/bucket/objects/small").status_code == 200  # Dec row carries 20
    assert quota(client, "2026-12")["sp_free_quota_size"] == 20
    # a read stamped in November that commits now (a slow instance): November's own quotas are spent,
    # and its one-time rest moved to December, so it is refused instead of spending those 20 bytes twice
    clock.now_us = NOV
    refused = client.get("/api/v1/buckets/bucket/objects/small")
    assert refused.status_code == 429
    assert quota(client, "2026-11")["sp_free_quota_size"] == 0
    assert quota(client, "2026-12")["sp_free_quota_size"] == 20

def test_history_is_newest_first_with_empty_months_as_zeros(client, storage, local_location, clock):
    make_bucket(storage, charged_read_quota=10, monthly_free_read_quota=10, free_read_quota=100)
    put(storage, "bucket", "k", b"x" * 25)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200  # November: 10 + 10 + 5
    clock.now_us = int(dt.datetime(2027, 2, 3, tzinfo=dt.UTC).timestamp() * 1_000_000)
    assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200  # February: 10 + 10 + 5
    assert client.get("/api/v1/buckets/bucket/objects/k", headers={"Range": "bytes=0-6"}).status_code == 206
    response = client.get("/api/v1/buckets/bucket/read-quota/history")
    assert response.status_code == 200, response.json
    history = response.json
    assert [m["year_month"] for m in history] == [
        "2027-02", "2027-01", "2026-12", "2026-11", "2026-10", "2026-09", "2026-08", "2026-07", "2026-06",
        "2026-05", "2026-04", "2026-03"]
    assert history[0] == {"year_month": "2027-02", "charged_consumed_size": 10, "monthly_free_consumed_size": 10,
                          "free_consumed_size": 12, "consumed_size": 32}
    assert history[3] == {"year_month": "2026-11", "charged_consumed_size": 10, "monthly_free_consumed_size": 10,
                          "free_consumed_size": 5, "consumed_size": 25}
    assert all(m["consumed_size"] == 0 for i, m in enumerate(history) if i not in (0, 3))
    # each month agrees with that month's read-quota figures
    for month in (history[0], history[3]):
        figures = quota(client, month["year_month"])
        assert {k: figures[k] for k in month if k != "year_month"} == {k: v for k, v in month.items()
                                                                       if k != "year_month"}
    assert [m["year_month"] for m in client.get("/api/v1/buckets/bucket/read-quota/history?months=2").json] == [
        "2027-02", "2027-01"]
    longest = client.get("/api/v1/buckets/bucket/read-quota/history?months=120").json
    assert len(longest) == 120 and longest[-1]["year_month"] == "2017-03"


def test_history_and_records_are_the_owners_only(app, storage, local_location, auth):
    make_bucket(storage, owner="olivia", visibility="private")
    client = app.test_client()
    for path in ("read-quota/history", "read-records?format=csv"):
        url = f"/api/v1/buckets/bucket/{path}"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=auth.headers("mallory")).status_code == 403
        assert client.get(url, headers=auth.headers("olivia")).status_code == 200


def seed_records(storage, count: int, timestamps=lambda i: 1000 + i // 3) -> None:
    with storage.session_factory()() as session, session.begin():
        bucket_id = session.scalar(select(Bucket.id).where(Bucket.name == "bucket"))
        session.add_all([
            ReadRecord(bucket_id=bucket_id, year_month="2026-11", object_name=f"dir/o,{i} \"q\"", object_id=i,
                       checksum=f"{i:064x}", account="a", timestamp_us=timestamps(i), read_size=i)
            for i in range(count)
        ])


def test_records_as_csv_are_the_json_rows_with_the_same_paging(client, storage):
    make_bucket(storage)
    seed_records(storage, 25)
    base = "/api/v1/buckets/bucket/read-records?max_records=10&start_timestamp_us=1000&end_timestamp_us=1008"
    json_rows, csv_rows, cursor, json_cursor = [], [], None, None
    while True:
        page = client.get(base + (f"&cursor={json_cursor}" if json_cursor else "")).json
        json_rows += page["read_records"]
        as_csv = client.get(base + "&format=csv" + (f"&cursor={cursor}" if cursor else ""))
        assert as_csv.status_code == 200
        assert as_csv.headers["Content-Type"].startswith("text/csv")
        assert as_csv.is_streamed
        lines = list(csv.reader(io.StringIO(as_csv.get_data(as_text=True), newline="")))
        assert lines[0] == ["object_name", "object_id", "checksum", "account", "timestamp_us", "read_size"]
        csv_rows += lines[1:]
        cursor, json_cursor = as_csv.headers.get("X-Next-Cursor"), page["next_cursor"]
        assert cursor == json_cursor
        if cursor is None:
            assert "Link" not in as_csv.headers
            break
        link = as_csv.headers["Link"]
        assert link.endswith('>; rel="next"') and f"cursor={cursor}" in link and "format=csv" in link
    assert len(json_rows) == 24  # [1000, 1008) holds records 0..23
    assert csv_rows == [[r["object_name"], str(r["object_id"]), r["checksum"], r["account"], str(r["timestamp_us"]),
                         str(r["read_size"])] for r in json_rows]
    # Accept: text/csv chooses CSV; a browser's */* and an explicit format=json keep JSON
    assert client.get(base, headers={"Accept": "text/csv"}).headers["Content-Type"].startswith("text/csv")
    assert client.get(base, headers={"Accept": "*/*"}).is_json
    assert client.get(base + "&format=json", headers={"Accept": "text/csv"}).is_json
    empty = client.get("/api/v1/buckets/bucket/read-records?format=csv&start_timestamp_us=0&end_timestamp_us=1")
    assert empty.get_data(as_text=True) == "object_name,object_id,checksum,account,timestamp_us,read_size\r\n"


def test_a_csv_page_of_a_thousand_records_is_sent_in_chunks(client, storage):
    make_bucket(storage)
    seed_records(storage, 1000, timestamps=lambda i: 5000 + i)
    response = client.get("/api/v1/buckets/bucket/read-records?format=csv&max_records=1000")
    chunks = list(response.response)
    assert len(chunks) == 5  # header with the first 200 rows, then 200 rows a chunk
    assert sum(chunk.count(b"\r\n") for chunk in chunks) == 1 + 1000
    assert "X-Next-Cursor" not in response.headers


def test_a_busy_combiner_gathers_before_its_next_batch_and_an_idle_one_does_not_wait():
    import threading

    from storage_core.services.combiner import Combiner

    batches: list[list[str]] = []
    release = threading.Event()

    def run(_key: str, items: list[str]) -> list[str]:
        batches.append(items)
        if items == ["first"]:
            release.wait(10)
        return [item.upper() for item in items]

    combiner: Combiner[str] = Combiner(run, gather=0.5)
    started = time.monotonic()
    assert combiner.submit("k", "alone") == "ALONE"
    assert time.monotonic() - started < 0.4  # the key was idle: no gathering wait
    results: dict[str, str] = {}

    def submit(item: str) -> None:
        results[item] = combiner.submit("k", item)

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    while len(batches) < 2:  # the first batch runs (and blocks)
        time.sleep(0.01)
    queued = threading.Thread(target=submit, args=("queued",))
    queued.start()
    time.sleep(0.1)
    release.set()  # "queued" is handed the lead and waits for more before its batch
    time.sleep(0.1)
    late = threading.Thread(target=submit, args=("late",))
    late.start()
    for thread in (first, queued, late):
        thread.join(10)
    assert results == {"first": "FIRST", "queued": "QUEUED", "late": "LATE"}
    assert batches == [["alone"], ["first"], ["queued", "late"]]
