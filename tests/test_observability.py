"""Observability and the hot path: metrics across gunicorn workers, JSON access logs, SQL per download."""

from __future__ import annotations

import json
import logging
import re

import pytest
import requests
from sqlalchemy import event

from tests.conftest import autocommit_engine_for, make_bucket, put
from tests.support.servers import GunicornServer

KiB = 1024


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_metrics_count_downloads_refusals_and_failovers_across_workers(settings, storage, local_location,
                                                                       local_root, tmp_path):
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(tmp_path / "cold")}})
    make_bucket(storage, locations=["hot", "cold"], charged_read_quota=3 * 64 * KiB,
                monthly_free_read_quota=0, free_read_quota=0)
    checksum = put(storage, "bucket", "k", b"a" * 64 * KiB)["checksum"]
    piece = local_root / "pieces" / checksum[:2] / checksum[2:4] / f"{checksum}.0"
    piece.write_bytes(b"b" * 64 * KiB)  # the hot copy is corrupt: the cold one serves

    server = GunicornServer(settings, workers=2)
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects/k"
        statuses = [requests.get(url, timeout=10).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        text = ""
        for _ in range(3):  # any worker answers with the samples of all workers
            text = requests.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    route = "/api/v1/buckets/<bucket>/objects/<path:key>"
    assert metric(text, "storage_http_requests_total", route=route, status="200") == 3, text
    assert metric(text, "storage_http_requests_total", route=route, status="429") == 1
    assert metric(text, "storage_quota_rejections_total") == 1
    assert metric(text, "storage_failovers_total", location="hot", reason="CorruptPiece") == 1
    assert metric(text, "storage_bytes_served_total", location="cold") == 3 * 64 * KiB
    assert metric(text, "storage_http_request_duration_seconds_count", route=route, method="GET") == 4


@pytest.mark.slow
@pytest.mark.postgresql(reason="charges are combined per bucket on PostgreSQL only")
def test_charge_lock_hold_and_batch_size_are_measured(settings, storage, local_location):
    """Every combined charge observes how long it held the month row and how many reads it decided: 6 reads one
    after another are 6 batches of one; 30 at once are 30 reads in at most 30 batches (of which 4 are refused)."""
    from concurrent.futures import ThreadPoolExecutor

    make_bucket(storage, charged_read_quota=32 * 4 * KiB, monthly_free_read_quota=0, free_read_quota=0)
    put(storage, "bucket", "k", b"s" * 4 * KiB)
    server = GunicornServer(settings, workers=2)
    try:
        url = f"{server.url}/api/v1/buckets/bucket/objects/k"
        one_by_one = [requests.get(url, timeout=10).status_code for _ in range(6)]
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        assert metric(text, "storage_charge_batch_size_count") == 6, text
        assert metric(text, "storage_charge_batch_size_sum") == 6
        with ThreadPoolExecutor(30) as pool:
            together = list(pool.map(lambda _: requests.get(url, timeout=30).status_code, range(30)))
        text = requests.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    assert one_by_one == [200] * 6 and sorted(together) == [200] * 26 + [429] * 4
    batches = metric(text, "storage_charge_batch_size_count")
    assert metric(text, "storage_charge_batch_size_sum") == 36 and 6 < batches <= 36
    assert metric(text, "storage_charge_lock_seconds_count") == batches
    # each hold is at least a round trip and a commit, and none takes anywhere near a second here
    assert 0 < metric(text, "storage_charge_lock_seconds_sum") < batches
    assert metric(text, "storage_charge_lock_seconds_bucket", le="1.0") == batches


def test_one_json_access_line_per_request_with_the_request_id(client, storage, local_location, caplog, auth):
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * 1000)
    caplog.set_level(logging.INFO, logger="storage_core.accesslog")
    token = auth.token("reader")
    response = client.get("/api/v1/buckets/bucket/objects/k?X-Storage-Signature=secret-looking",
                          headers={"X-Request-ID": "abc-123", "Authorization": f"Bearer {token}"})
    assert len(response.data) == 1000
    response.close()
    assert response.headers["X-Request-ID"] == "abc-123"
    lines = [r for r in caplog.records if r.name == "storage_core.accesslog"]
    assert len(lines) == 1
    from storage_core.logs import JsonFormatter

    entry = json.loads(JsonFormatter().format(lines[0]))
    assert entry["request_id"] == "abc-123" and entry["status"] == 200 and entry["content_bytes"] == 1000
    assert entry["path"] == "/api/v1/buckets/bucket/objects/k"
    assert "secret-looking" not in json.dumps(entry) and token not in json.dumps(entry)
    made_up = client.get("/health/live", headers={"X-Request-ID": "bad id; with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.headers["X-Request-ID"])


def test_sql_statements_of_one_charged_download(client, storage, local_location, engine):
    """The hot path's queries, counted: this fails when a change adds one."""
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * 1000)
    client.get("/api/v1/buckets/bucket/objects/k").close()  # warm: creates the month's quota row
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(" ".join(statement.split())[:160])

    engines = [engine, autocommit_engine_for(engine)]
    for each in engines:
        event.listen(each, "before_cursor_execute", count)
    try:
        response = client.get("/api/v1/buckets/bucket/objects/k")
        assert response.status_code == 200 and len(response.data) == 1000
        response.close()
    finally:
        for each in engines:
            event.remove(each, "before_cursor_execute", count)
    statements = [s for s in statements if not s.startswith("PREPARE")]  # once per connection: see below
    # one prepared SELECT resolves object, bucket, file, copies and the account's limits (the PREPARE
    # itself was sent once, by the warm-up; concurrent downloads share it); then the charge (its own
    # transaction, shared by concurrent reads of the bucket) in two round trips: begin and lock the
    # month row, then consume, record and commit
    assert [s.split()[0] for s in statements] == EXPECTED_STATEMENTS, statements


EXPECTED_STATEMENTS = ["EXECUTE", "BEGIN;", "WITH"]


def test_resolving_query_is_prepared_once_per_connection(client, storage, local_location, engine):
    make_bucket(storage)
    put(storage, "bucket", "k", b"x" * 10)
    read_engine = autocommit_engine_for(engine)
    read_engine.dispose()  # new server connections: nothing prepared on them yet
    sent: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.startswith(("PREPARE", "EXECUTE")):
            sent.append(statement.split()[0])

    event.listen(read_engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            response = client.get("/api/v1/buckets/bucket/objects/k")
            assert response.status_code == 200 and response.data == b"x" * 10
            response.close()
        read_engine.dispose()  # a reconnect (database restart, invalidated connection) prepares again
        assert client.get("/api/v1/buckets/bucket/objects/k").status_code == 200
        with read_engine.connect() as connection:  # the pool's one connection: a pooler's reset, say
            connection.exec_driver_sql("DEALLOCATE ALL")
        response = client.get("/api/v1/buckets/bucket/objects/k")
        assert response.status_code == 200 and response.data == b"x" * 10
    finally:
        event.remove(read_engine, "before_cursor_execute", record)
    assert sent == ["PREPARE", "EXECUTE", "EXECUTE", "EXECUTE", "PREPARE", "EXECUTE", "EXECUTE", "PREPARE", "EXECUTE"]
