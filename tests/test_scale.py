"""Tables that grow (issue 14, target 5): a listing page reached by a cursor costs what the first page costs,
because the cursor is the start of the index range (not a filter after scanning from the start); the
availability of many files is one query. bench/scale.py measures it at ten million records; these tests
check the plans that make it so, on PostgreSQL and SQLite (tests/support/plans.py)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from marshmallow import Schema
from sqlalchemy import Engine, insert, select

from storage_core.db import array_literal
from storage_core.models import Bucket, CopyState, File, FileCopy, Object, ReadRecord, StorageLocation
from storage_core.schemas import AvailabilitySchema
from storage_core.services.restore import FileState
from tests.conftest import make_bucket
from tests.support.plans import explain, index_on, statements

START = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
END = int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
RECORDS = 4000
OBJECTS = 3000
# a page reached by a cursor costs at most this much more than the first page (a cursor applied as a
# filter costs about RECORDS / 2 / 100 = 20 times as much here)
FLAT = 2


def bucket_id(storage, name: str) -> int:
    with storage.session_factory()() as session:
        return session.scalar(select(Bucket.id).where(Bucket.name == name))


def seed_records(storage, engine) -> None:
    """RECORDS records in ``bucket`` (three per microsecond: pages end inside a microsecond) between those of
    another bucket, as buckets sharing the table write them."""
    make_bucket(storage, "bucket")
    make_bucket(storage, "other")
    ours, theirs = bucket_id(storage, "bucket"), bucket_id(storage, "other")
    rows = [{"bucket_id": b, "year_month": "2026-11", "object_name": "o", "object_id": i, "checksum": "0" * 64,
             "account": "a", "timestamp_us": START + 1000 + i // 3, "read_size": 1, "charged_size": 1}
            for i in range(RECORDS) for b in (ours, theirs)]
    with engine.begin() as connection:
        connection.execute(insert(ReadRecord), rows)


def record_page(client, **query) -> dict:
    response = client.get("/api/v1/buckets/bucket/read-records", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def test_a_read_record_page_reached_by_a_cursor_starts_the_index_range_at_the_cursor(client, storage, engine):
    """docs/benchmarks.md "Scale (tables that grow)" has these plans at ten million records."""
    seed_records(storage, engine)
    middle = START + 1000 + RECORDS // 6  # half of the bucket's records lie before it
    cursor = record_page(client, start_timestamp_us=middle, max_records=1)["next_cursor"]
    with statements(engine, "read_records") as first_sent:
        first = record_page(client, start_timestamp_us=START, end_timestamp_us=END, max_records=100)
    with statements(engine, "read_records") as deep_sent:
        deep = record_page(client, start_timestamp_us=START, end_timestamp_us=END, max_records=100, cursor=cursor)

    # the page is the hundred records right after the cursor's, in (timestamp, id) order, none repeated
    with storage.session_factory()() as session:
        after = session.execute(select(ReadRecord.timestamp_us, ReadRecord.object_id, ReadRecord.id)
                                .where(ReadRecord.bucket_id == bucket_id(storage, "bucket"))
                                .order_by(ReadRecord.timestamp_us, ReadRecord.id)).all()
    at = [r.object_id for r in after].index(3 * (RECORDS // 6))  # the one record of the first query
    assert after[at].timestamp_us == middle
    assert [(r["timestamp_us"], r["object_id"]) for r in deep["read_records"]] == [
        (r.timestamp_us, r.object_id) for r in after[at + 1:at + 101]]
    assert first["read_records"][0]["object_id"] == 0

    (first_statement,), (deep_statement,) = first_sent, deep_sent
    plan, baseline = explain(engine, deep_statement), explain(engine, first_statement)
    conditions = plan.index_scans(index_on(engine, "read_records", "bucket_id", "timestamp_us", "id"))
    if plan.dialect == "postgresql":
        # the cursor itself is the range's start (the row comparison is an index bound), nothing is filtered
        assert [c.replace("'", "").replace("::bigint", "") for c in conditions] == [
            f"((bucket_id = {bucket_id(storage, 'bucket')}) AND (ROW(timestamp_us, id) > ROW({middle}, "
            f"{after[at].id})) AND (timestamp_us < {END}))"], plan.text
        assert plan.filters() == [], plan.text
    else:
        # SQLite bounds the range by the row comparison's timestamp (shown as timestamp_us>?); the id part is
        # checked on the records of that one microsecond
        assert conditions == ["bucket_id=? AND timestamp_us>? AND timestamp_us<?"], plan.text
        assert "timestamp_us >= " not in deep_statement.sql  # one lower bound: the cursor
    assert plan.cost <= FLAT * baseline.cost, (plan.cost, baseline.cost, plan.text)


def test_a_cursor_before_start_timestamp_is_not_a_bound(client, storage, engine):
    """A cursor earlier than start_timestamp_us: every record from the start on follows it, the start bounds."""
    seed_records(storage, engine)
    early = record_page(client, start_timestamp_us=START, max_records=1)["next_cursor"]
    with statements(engine, "read_records") as sent:
        page = record_page(client, start_timestamp_us=START + 1100, max_records=3, cursor=early)
    assert [r["timestamp_us"] for r in page["read_records"]] == [START + 1100] * 3
    (statement,) = sent
    plan = explain(engine, statement)
    conditions = plan.index_scans(index_on(engine, "read_records", "bucket_id", "timestamp_us", "id"))
    if plan.dialect == "postgresql":
        assert "(timestamp_us >= " in conditions[0] and "ROW(" not in conditions[0], plan.text
        assert plan.filters() == [], plan.text
    else:
        assert conditions == ["bucket_id=? AND timestamp_us>? AND timestamp_us<?"], plan.text


def seed_objects(storage, engine) -> list[str]:
    """OBJECTS objects ``k-00000`` ... in ``bucket`` and as many ``a-...`` and ``z-...`` around them, each of
    its own file stored on ``location``; the checksums of the ``k-`` ones."""
    make_bucket(storage, "bucket")
    ours = bucket_id(storage, "bucket")
    names = [f"{side}-{i:05d}" for side in ("a", "k", "z") for i in range(OBJECTS)]
    sums = {name: hashlib.sha256(name.encode()).hexdigest() for name in names}
    with engine.begin() as connection:
        connection.execute(insert(File), [
            {"checksum": c, "size": 1, "piece_size": 1, "piece_count": 1, "block_size": 1, "block_digests": b"",
             "block_hash": "blake3", "md5": c[:32]} for c in sums.values()])
        connection.execute(insert(Object), [
            {"bucket_id": ours, "key": name, "checksum": c, "content_type": "application/octet-stream"}
            for name, c in sums.items()])
    return [sums[name] for name in names if name.startswith("k-")]


def listing(client, **query) -> dict:
    response = client.get("/api/v1/buckets/bucket/objects", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


@pytest.mark.profile("storage")  # the native object listing is the storage service's
@pytest.mark.parametrize("prefix", ["", "k-"])
def test_an_object_page_reached_by_a_cursor_starts_the_index_range_at_the_cursor(client, storage, engine, prefix):
    seed_objects(storage, engine)
    # k-01490 ... k-01498: the cursor after the ninth is k-01498's
    cursor = listing(client, prefix=f"k-{OBJECTS // 2 // 10 - 1:04d}", limit=9)["next_cursor"]
    middle = OBJECTS // 2 - 2
    with statements(engine, "objects") as first_sent:
        listing(client, prefix=prefix, limit=100)
    with statements(engine, "objects") as deep_sent:
        deep = listing(client, prefix=prefix, limit=100, cursor=cursor)
    assert [o["key"] for o in deep["objects"]][:2] == [f"k-{middle + 1:05d}", f"k-{middle + 2:05d}"]

    (first_statement,), (deep_statement,) = first_sent, deep_sent
    plan, baseline = explain(engine, deep_statement), explain(engine, first_statement)
    conditions = plan.index_scans(index_on(engine, "objects", "bucket_id", "key"))
    assert len(conditions) == 1, plan.text
    if plan.dialect == "postgresql":
        # the cursor's key is the range's start; the prefix, if any, only its end
        assert f"((key)::text > 'k-{middle:05d}'::text)" in conditions[0], plan.text
        assert "(key)::text >= " not in conditions[0], plan.text
        assert not [f for f in plan.filters() if "key" in f], plan.text
    else:
        assert conditions == ["bucket_id=? AND key>? AND key<?" if prefix else "bucket_id=? AND key>?"], plan.text
    assert plan.cost <= FLAT * baseline.cost, (plan.cost, baseline.cost, plan.text)


def test_an_s3_listing_continued_after_a_marker_starts_the_index_range_at_it(storage, engine):
    seed_objects(storage, engine)
    objects = storage.object_service()
    with statements(engine, "objects") as first_sent:
        objects.list_page("bucket", prefix="k-", max_keys=100)
    with statements(engine, "objects") as deep_sent:
        page = objects.list_page("bucket", prefix="k-", after=f"k-{OBJECTS // 2:05d}", max_keys=100)
    assert page.objects[0].key == f"k-{OBJECTS // 2 + 1:05d}"
    (first_statement,), (deep_statement,) = first_sent, deep_sent
    plan, baseline = explain(engine, deep_statement), explain(engine, first_statement)
    conditions = plan.index_scans(index_on(engine, "objects", "bucket_id", "key"))
    if plan.dialect == "postgresql":
        assert f"((key)::text > 'k-{OBJECTS // 2:05d}'::text)" in conditions[0], plan.text
        assert "(key)::text >= " not in conditions[0], plan.text
    else:
        assert conditions == ["bucket_id=? AND key>? AND key<?"], plan.text
    assert plan.cost <= FLAT * baseline.cost, (plan.cost, baseline.cost, plan.text)


def test_the_availability_of_a_thousand_files_is_one_query_and_only_what_the_caller_may_read(
        app, storage, engine, auth, local_location):
    """Half of the files are in a public bucket, half only in a private one of another account."""
    sums = seed_objects(storage, engine)[:1000]
    make_bucket(storage, "private", owner="owen", visibility="private")
    with storage.session_factory()() as session:
        location_id = session.scalar(select(StorageLocation.id).where(StorageLocation.name == local_location))
        private_id = session.scalar(select(Bucket.id).where(Bucket.name == "private"))
    hidden = set(sums[1::2])
    with engine.begin() as connection:
        connection.execute(insert(FileCopy), [{"checksum": c, "location_id": location_id, "state": CopyState.STORED}
                                              for c in sums])
        # the hidden files are objects of the private bucket only
        connection.execute(Object.__table__.update().where(Object.checksum.in_(hidden)).values(bucket_id=private_id))
    olivia = app.test_client()
    with statements(Engine, "file_copies") as sent:
        response = olivia.post("/api/v1/files/availability", json={"checksums": sums},
                               headers=auth.headers("olivia"))
    assert response.status_code == 200
    assert [(s["checksum"], s["state"], s["tier"]) for s in response.json] == [
        (c, "unknown" if c in hidden else "available", None if c in hidden else "hot") for c in sums]
    assert len(sent) == 1  # copies and the read permission in one round trip; no restore job to look up
    owner = app.test_client().post("/api/v1/files/availability", json={"checksums": sums},
                                   headers=auth.headers("owen")).json
    assert [s["state"] for s in owner] == ["available"] * len(sums)  # owen owns the private bucket


def test_availability_answers_as_marshmallow_would():
    """AvailabilitySchema.dump skips marshmallow's machinery; it must give what marshmallow gives."""
    schema = AvailabilitySchema(many=True)
    states = [FileState("a" * 64, "available", tier="hot"),
              FileState("b" * 64, "available", dt.datetime(2026, 12, 2, 10, 30, 5, 123456, tzinfo=dt.UTC), "cold"),
              FileState("c" * 64, "restoring", retry_after=5), FileState("d" * 64, "unknown")]
    assert schema.dump(states) == Schema.dump(schema, states)
    assert AvailabilitySchema().dump(states[1]) == Schema.dump(AvailabilitySchema(), states[1])
    assert schema.dump(states)[1]["expires_at"] == "2026-12-02T10:30:05.123456+00:00"


@pytest.mark.parametrize("checksums, where", [(["0" * 64, "nope"], "1"), (["0" * 64, 7], "1"), ("0" * 64, None)])
def test_a_bad_checksum_in_a_list_is_named_as_before(client, checksums, where):
    """The fast path for well-formed lists leaves the messages of the others to marshmallow's List field."""
    response = client.post("/api/v1/files/availability", json={"checksums": checksums})
    assert response.status_code == 400
    assert ("checksums" in response.json["detail"]) and (where is None or where in response.json["detail"])


@pytest.mark.postgresql
def test_the_array_literal_of_a_list_of_strings_reads_back_as_that_list(engine):
    """db.among hands PostgreSQL the values as one array literal: any text must come back as it was."""
    values = ["plain", 'quo"te', "back\\slash", 'a\\"b', "com,ma", "{brace}", "", "NULL", " spaced ", "ünï"]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT CAST(%(v)s AS VARCHAR[])", {"v": array_literal(values)}).scalar() \
            == values
