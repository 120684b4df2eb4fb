"""Scale-out (docs/deployment.md): the settings a deployment behind poolers needs, and several downloader
instances behind a real nginx sharing one PostgreSQL database."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import func, select

from storage_core.db import make_engine
from storage_core.models import BucketTraffic, ReadRecord
from storage_core.services.resolve import BY_KEY
from tests.conftest import KiB, make_bucket, put
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
