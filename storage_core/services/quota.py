"""Read quota: charging a read (check, consume and record in one transaction), refunds, and bill queries.

Which quota pays for how much of a read is ``storage_core.accounting``'s rule; this module applies it
to a month row it holds locked, and inserts the read record in the same transaction. Two ways, both
exact under any concurrency on any number of instances:

- **combined charges (PostgreSQL)**: the charges that arrive together for one bucket in one worker are
  decided in one transaction that holds the month row's lock (``SELECT ... FOR UPDATE``): admission and
  split are computed from the locked row, then one relative UPDATE and one multi-row INSERT. Every read
  of a bucket queues on that row's lock, so one transaction (one commit, one fsync) for a whole batch
  instead of one per read is what lets reads of one bucket scale. Requests are admitted smallest first:
  when one is refused, no other refused one would have fit either. When the month's charged quota alone
  pays for the whole batch (the usual case of a paying bucket), the split of every read is all charged
  quota and nothing needs deciding in Python: one statement consumes and records, under the row lock
  its UPDATE takes, only if that row still has enough charged quota (``CHARGE_FROM_CHARGED_QUOTA``);
  otherwise the batch is decided on the locked row as above.
- **one charge per transaction (SQLite)**: the transaction begins with the write lock (``BEGIN
  IMMEDIATE``, see ``db.make_engine``), reads the month row, splits, updates and records.

Nothing is ever read and written back without the row's (or the database's) lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage_core.accounting import Left, Split, split_charge, split_refund
from storage_core.cursors import decode_cursor, encode_cursor
from storage_core.db import connection, transaction
from storage_core.errors import InvalidArgument, QuotaExceeded
from storage_core.metrics import CHARGE_BATCH_SIZE, CHARGE_LOCK_SECONDS, QUOTA_REJECTIONS
from storage_core.models import Bucket, BucketTraffic, ReadRecord
from storage_core.services.buckets import get_bucket
from storage_core.services.combiner import BUSY_GATHER_SECONDS, Combiner
from storage_core.timeutil import now_us, recent_months, seconds_to_next_month, year_month_of

T = BucketTraffic

# A combined charge on PostgreSQL is two round trips on an autocommit connection (a round trip costs a
# worker more CPU than these statements cost PostgreSQL): the transaction is begun by hand with the
# month row's lock and an id for each record, and committed by the statement that consumes and records.
BEGIN_AND_LOCK_MONTH = (
    "BEGIN; SELECT charged_quota_size, charged_consumed_size, monthly_free_quota_size, monthly_free_consumed_size,"
    " free_quota_remaining,"
    " ARRAY(SELECT nextval(pg_get_serial_sequence('read_records', 'id')) FROM generate_series(1, %s))"
    " FROM bucket_traffic WHERE bucket_id = %s AND year_month = %s FOR UPDATE"
)
CONSUME_RECORD_COMMIT = (
    "WITH consumed AS (UPDATE bucket_traffic SET charged_consumed_size = charged_consumed_size + %s,"
    " monthly_free_consumed_size = monthly_free_consumed_size + %s,"
    " free_quota_remaining = free_quota_remaining - %s, free_consumed_size = free_consumed_size + %s"
    " WHERE bucket_id = %s AND year_month = %s)"
    " INSERT INTO read_records (id, bucket_id, year_month, object_name, object_id, checksum, account,"
    " timestamp_us, read_size, charged_size, monthly_free_size, free_size) VALUES {rows}; COMMIT"
)
RECORD_VALUES = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
# One round trip, one transaction (autocommit: the statement is its own), for a batch that the month's charged
# quota alone pays for: ``split_charge`` takes charged quota first, so every read's split is then all charged.
# The UPDATE locks the month row and re-checks the condition on its newest version: it consumes only if the
# whole batch still fits, else it matches nothing, nothing is inserted, and no row comes back (the batch is
# then decided on the locked row). Each record's id is drawn with its batch position, so each charge knows
# its own record.
CHARGE_FROM_CHARGED_QUOTA = (
    "WITH consumed AS (UPDATE bucket_traffic SET charged_consumed_size = charged_consumed_size + %s"
    " WHERE bucket_id = %s AND year_month = %s AND charged_quota_size - charged_consumed_size >= %s"
    " RETURNING bucket_id, year_month),"
    " wanted AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('read_records', 'id')) AS id, w.*"
    " FROM consumed, (VALUES {rows}) AS w (position, object_name, object_id, checksum, account, timestamp_us,"
    " read_size)),"
    " inserted AS (INSERT INTO read_records (id, bucket_id, year_month, object_name, object_id, checksum, account,"
    " timestamp_us, read_size, charged_size, monthly_free_size, free_size)"
    " SELECT wanted.id, consumed.bucket_id, consumed.year_month, object_name, object_id, checksum, account,"
    " timestamp_us, read_size, read_size, 0, 0 FROM wanted, consumed)"
    " SELECT position, id FROM wanted"
)
WANTED_VALUES = "(%s, %s, %s, %s, %s, %s, %s)"
# combined refunds (PostgreSQL): the records of reads that ended early, lowered by what each got back
REFUND_RECORDS = (
    "UPDATE read_records AS r SET read_size = r.read_size - v.back, charged_size = r.charged_size - v.charged,"
    " monthly_free_size = r.monthly_free_size - v.monthly_free, free_size = r.free_size - v.free"
    " FROM (VALUES {rows}) AS v(id, back, charged, monthly_free, free) WHERE r.id = v.id"
)


# the columns of a read record in the API, in the order of the CSV export
READ_RECORD_FIELDS = ("object_name", "object_id", "checksum", "account", "timestamp_us", "read_size")


@dataclass(frozen=True, slots=True)
class RecordPage:
    """A page of read records: rows in ``READ_RECORD_FIELDS`` order, and where the next page starts."""

    rows: list[tuple[Any, ...]]
    next_cursor: str | None
    next_start_timestamp_us: int


def _rollback(conn: Connection) -> None:
    """End a transaction begun by hand; a connection that cannot is discarded, never pooled mid-transaction."""
    if conn.invalidated:
        return
    try:
        conn.exec_driver_sql("ROLLBACK")
    except Exception:
        conn.invalidate()


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read to charge."""

    bucket_id: int
    object_name: str
    object_id: int
    checksum: str
    account: str
    size: int


@dataclass(frozen=True, slots=True)
class Charge:
    """A charge that was made: enough to refund it exactly."""

    record_id: int
    bucket_id: int
    year_month: str
    split: Split

    @property
    def size(self) -> int:
        return self.split.total


def quota_exceeded(size: int, timestamp_us: int) -> QuotaExceeded:
    """The refusal of a read: the quota comes back with the next UTC month, so that is when to retry."""
    QUOTA_REJECTIONS.inc()
    return QuotaExceeded(f"not enough read quota left this month for {size} bytes",
                         headers={"Retry-After": str(seconds_to_next_month(timestamp_us))})


def left_of(row: Any) -> Left:
    """What a month row (a ``BucketTraffic`` or a row of its columns) has left."""
    return Left.of_month(row.charged_quota_size, row.charged_consumed_size, row.monthly_free_quota_size,
                         row.monthly_free_consumed_size, row.free_quota_remaining)


def create_month_row(session: Session, bucket_id: int, year_month: str) -> None:
    """Create the month's traffic row from the bucket, moving the one-time free quota left into it.

    The previous month's row is locked while its remaining one-time free quota is carried over, and
    is left with none: a read of the previous month that commits after the new month began cannot
    spend the same free bytes a second time (it can only use that month's own quotas).
    """
    previous = session.scalar(
        select(T).where(T.bucket_id == bucket_id, T.year_month < year_month)
        .order_by(T.year_month.desc()).limit(1).with_for_update())
    bucket = session.get(Bucket, bucket_id)
    if bucket is None:
        return
    carried = previous.free_quota_remaining if previous is not None else bucket.free_read_quota
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = session.execute(
        dialect.insert(T).values(
            bucket_id=bucket_id, year_month=year_month, charged_quota_size=bucket.charged_read_quota,
            charged_consumed_size=0, monthly_free_quota_size=bucket.monthly_free_read_quota,
            monthly_free_consumed_size=0, free_quota_remaining=carried, free_consumed_size=0,
        ).on_conflict_do_nothing()
    ).rowcount
    if inserted and previous is not None and previous.year_month < year_month:
        session.execute(update(T).where(T.bucket_id == bucket_id, T.year_month == previous.year_month)
                        .values(free_quota_remaining=0).execution_options(synchronize_session=False))


def consume(split: Split) -> dict[str, Any]:
    """The relative SET clause that consumes ``split`` from a month row."""
    return {"charged_consumed_size": T.charged_consumed_size + split.charged,
            "monthly_free_consumed_size": T.monthly_free_consumed_size + split.monthly_free,
            "free_quota_remaining": T.free_quota_remaining - split.free,
            "free_consumed_size": T.free_consumed_size + split.free}


def read_records_after(start_us: int, after: tuple[int, int] | None) -> ColumnElement[bool]:
    """The one lower bound of a page of read records: the cursor's (timestamp, id) as a row comparison, which
    PostgreSQL and SQLite both make the start of the index range on (bucket_id, timestamp_us, id), so a page
    deep in a month costs what the first one does (tests/test_scale.py checks both plans); ``start_us``
    when there is no cursor, or the cursor lies before it (every record from ``start_us`` on follows it).
    Never both: SQLite takes one lower bound per column and would filter by the other."""
    if after is None or after[0] < start_us:
        return ReadRecord.timestamp_us >= start_us
    return tuple_(ReadRecord.timestamp_us, ReadRecord.id) > tuple_(*after)


class QuotaService:
    """The quota checker (charge, refund) and the quota queryer (month figures, read records)."""

    def __init__(self, session_factory: sessionmaker[Session], clock: Callable[[], int] = now_us,
                 autocommit_engine: Engine | None = None):
        self.session_factory = session_factory
        # combined charges begin and commit their transaction themselves (see BEGIN_AND_LOCK_MONTH)
        self.autocommit_engine = autocommit_engine or session_factory.kw["bind"].execution_options(
            isolation_level="AUTOCOMMIT")
        self.clock = clock  # microseconds since the epoch (the container's clock provider)
        self._combiner: Combiner[Charge] = Combiner(self.charge_together, BUSY_GATHER_SECONDS)
        self._refunds: Combiner[None] = Combiner(self.refund_together)
        self._combine = self.autocommit_engine.dialect.name == "postgresql"
        # (bucket, month) whose last batch found too little charged quota: the next goes to the locked row
        # at once rather than try the one-statement charge first (either way is exact; this saves a round trip)
        self._short_of_charged: set[tuple[int, str]] = set()

    # ---- checker -----------------------------------------------------------------------------------

    def charge(self, request: ReadRequest) -> Charge:
        """Charge one read in a transaction of its own (or shared with concurrent reads of its bucket)."""
        timestamp_us = self.clock()
        if self._combine:
            return self._combiner.submit((request.bucket_id, year_month_of(timestamp_us)), (request, timestamp_us))
        with transaction(self.session_factory) as session:
            return self._charge_one(session, request, timestamp_us)

    def charge_together(self, key: tuple[int, str], batch: list[tuple[ReadRequest, int]]) -> list[Charge | Exception]:
        """Charges of one bucket and month in one transaction (PostgreSQL): each gets its ``Charge`` or
        its ``QuotaExceeded``, smallest first while they fit."""
        bucket_id, year_month = key
        if key not in self._short_of_charged:
            charges = self._charge_from_charged_quota(bucket_id, year_month, batch)
            if charges is not None:
                return charges
            self._note_short(key, True)
        with connection(self.autocommit_engine) as conn:
            try:
                # round trip 1: open the transaction, lock the month row, take an id for every record
                row = conn.exec_driver_sql(BEGIN_AND_LOCK_MONTH, (len(batch), bucket_id, year_month)).first()
                if row is None:
                    conn.exec_driver_sql("ROLLBACK")
                else:
                    locked = time.perf_counter()  # the month row is ours from here to the commit (or rollback)
                    results = self._admit(conn, bucket_id, year_month, row, batch)
                    CHARGE_LOCK_SECONDS.observe(time.perf_counter() - locked)
                    CHARGE_BATCH_SIZE.observe(len(batch))
            except BaseException:
                _rollback(conn)
                raise
        if row is None:  # the month's first read: create its row (a transaction of its own), then again
            with transaction(self.session_factory) as session:
                create_month_row(session, bucket_id, year_month)
                if session.get(BucketTraffic, (bucket_id, year_month)) is None:  # the bucket is gone
                    return [QuotaExceeded("the bucket no longer exists") for _ in batch]
            return self.charge_together(key, batch)
        return results

    def _charge_from_charged_quota(self, bucket_id: int, year_month: str,
                                   batch: list[tuple[ReadRequest, int]]) -> list[Charge | Exception] | None:
        """The whole batch paid by the month's charged quota in one statement, or None (nothing charged) when
        that quota does not cover all of it or the month has no row yet."""
        total = sum(request.size for request, _ in batch)
        values: list[Any] = [total, bucket_id, year_month, total]
        for position, (request, timestamp_us) in enumerate(batch):
            values += [position, request.object_name, request.object_id, request.checksum, request.account,
                       timestamp_us, request.size]
        with connection(self.autocommit_engine) as conn:
            started = time.perf_counter()  # the statement holds the month row from its UPDATE to its commit
            rows = conn.exec_driver_sql(
                CHARGE_FROM_CHARGED_QUOTA.format(rows=", ".join([WANTED_VALUES] * len(batch))), tuple(values)).all()
        if not rows:
            return None
        CHARGE_LOCK_SECONDS.observe(time.perf_counter() - started)  # at most: the round trip bounds the hold
        CHARGE_BATCH_SIZE.observe(len(batch))
        ids = dict(rows)
        return [Charge(ids[position], bucket_id, year_month, Split(charged=request.size))
                for position, (request, _) in enumerate(batch)]

    def _note_short(self, key: tuple[int, str], short: bool) -> None:
        if not short:
            self._short_of_charged.discard(key)
        elif len(self._short_of_charged) < 100_000:  # bounded: past it, a batch may just try once more
            self._short_of_charged.add(key)

    def _admit(self, conn: Connection, bucket_id: int, year_month: str, row: Any,
               batch: list[tuple[ReadRequest, int]]) -> list[Charge | Exception]:
        """Admit the smallest requests first while they fit in what the locked row has left; round trip 2
        consumes, records and commits."""
        left, ids = left_of(row), row[-1]
        admitted: list[tuple[int, Split]] = []
        for position in sorted(range(len(batch)), key=lambda i: (batch[i][0].size, i)):
            split = split_charge(batch[position][0].size, left)
            if split is None:
                break  # smallest first: nothing after this fits either
            admitted.append((position, split))
            left = left.after(split)
        # the next batch of this month tries the one-statement charge again when charged quota would pay for
        # one like this one
        self._note_short((bucket_id, year_month), left.charged < sum(request.size for request, _ in batch))
        if not admitted:
            conn.exec_driver_sql("ROLLBACK")
            return [quota_exceeded(request.size, timestamp_us) for request, timestamp_us in batch]
        total = sum((split for _, split in admitted), Split())
        values: list[Any] = [total.charged, total.monthly_free, total.free, total.free, bucket_id, year_month]
        charges: dict[int, Charge] = {}
        for (position, split), record_id in zip(admitted, ids, strict=False):
            request, timestamp_us = batch[position]
            values += [record_id, bucket_id, year_month, request.object_name, request.object_id, request.checksum,
                       request.account, timestamp_us, request.size, split.charged, split.monthly_free, split.free]
            charges[position] = Charge(record_id, bucket_id, year_month, split)
        conn.exec_driver_sql(CONSUME_RECORD_COMMIT.format(rows=", ".join([RECORD_VALUES] * len(admitted))),
                             tuple(values))
        return [charges.get(position) or quota_exceeded(request.size, timestamp_us)
                for position, (request, timestamp_us) in enumerate(batch)]

    def _charge_one(self, session: Session, request: ReadRequest, timestamp_us: int) -> Charge:
        """Charge one read in ``session``'s transaction, which holds the write lock (SQLite), or raise."""
        year_month = year_month_of(timestamp_us)
        month = session.get(T, (request.bucket_id, year_month), with_for_update=True)
        if month is None:
            create_month_row(session, request.bucket_id, year_month)
            month = session.get(T, (request.bucket_id, year_month), with_for_update=True)
        split = split_charge(request.size, left_of(month)) if month is not None else None
        if split is None:
            raise quota_exceeded(request.size, timestamp_us)
        session.execute(update(T).where(T.bucket_id == request.bucket_id, T.year_month == year_month)
                        .values(**consume(split)).execution_options(synchronize_session=False))
        record = ReadRecord(
            bucket_id=request.bucket_id, year_month=year_month, object_name=request.object_name,
            object_id=request.object_id, checksum=request.checksum, account=request.account,
            timestamp_us=timestamp_us, read_size=request.size,
            charged_size=split.charged, monthly_free_size=split.monthly_free, free_size=split.free,
        )
        session.add(record)
        session.flush()
        return Charge(record.id, request.bucket_id, year_month, split)

    def refund(self, charge: Charge, undelivered: int) -> None:
        """Give back bytes that were charged but not delivered, newest quota first; fix the record.

        On PostgreSQL the refunds that arrive together for one bucket and month in one worker share one
        transaction (``refund_together``): when many downloads end early at once (a network failure cuts
        1,500 slow clients), they queue on that batch instead of each waiting for a pooled connection of
        its own, and failing once ``STORAGE_DB_TIMEOUT`` has passed."""
        back = split_refund(undelivered, charge.split)
        if not back.total:
            return
        if self._combine:
            self._refunds.submit((charge.bucket_id, charge.year_month), (charge, back))
            return
        with transaction(self.session_factory) as session:
            session.execute(
                update(T)
                .where(T.bucket_id == charge.bucket_id, T.year_month == charge.year_month)
                .values(**consume(Split(-back.charged, -back.monthly_free, -back.free)))
                .execution_options(synchronize_session=False)
            )
            if back.total == charge.size:
                session.execute(delete(ReadRecord).where(ReadRecord.id == charge.record_id))
            else:
                session.execute(
                    update(ReadRecord)
                    .where(ReadRecord.id == charge.record_id)
                    .values(read_size=ReadRecord.read_size - back.total,
                            charged_size=ReadRecord.charged_size - back.charged,
                            monthly_free_size=ReadRecord.monthly_free_size - back.monthly_free,
                            free_size=ReadRecord.free_size - back.free)
                    .execution_options(synchronize_session=False)
                )

    def refund_together(self, key: tuple[int, str], batch: list[tuple[Charge, Split]]) -> list[Exception | None]:
        """Refunds of one bucket and month in one transaction (PostgreSQL): the month row gets their sum back,
        records refunded whole are deleted, the others lowered in one statement."""
        bucket_id, year_month = key
        total = sum((back for _, back in batch), Split())
        whole = [charge.record_id for charge, back in batch if back.total == charge.size]
        partial = [(charge.record_id, back) for charge, back in batch if back.total != charge.size]
        with transaction(self.session_factory) as session:
            session.execute(
                update(T).where(T.bucket_id == bucket_id, T.year_month == year_month)
                .values(**consume(Split(-total.charged, -total.monthly_free, -total.free)))
                .execution_options(synchronize_session=False))
            if whole:
                session.execute(delete(ReadRecord).where(ReadRecord.id.in_(whole))
                                .execution_options(synchronize_session=False))
            if partial:
                values: list[int] = []
                for record_id, back in partial:
                    values += [record_id, back.total, back.charged, back.monthly_free, back.free]
                session.connection().exec_driver_sql(
                    REFUND_RECORDS.format(rows=", ".join(["(%s, %s, %s, %s, %s)"] * len(partial))), tuple(values))
        return [None] * len(batch)

    # ---- queryer -----------------------------------------------------------------------------------

    def read_quota(self, bucket_name: str, year_month: str | None) -> dict[str, Any]:
        year_month = year_month or year_month_of(self.clock())
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            row = session.get(T, (bucket.id, year_month))
            if row is None:  # no read yet: the figures the month will start with
                carried = session.scalar(
                    select(T.free_quota_remaining)
                    .where(T.bucket_id == bucket.id, T.year_month < year_month)
                    .order_by(T.year_month.desc()).limit(1))
                row = T(charged_quota_size=bucket.charged_read_quota, charged_consumed_size=0,
                        monthly_free_quota_size=bucket.monthly_free_read_quota, monthly_free_consumed_size=0,
                        free_quota_remaining=bucket.free_read_quota if carried is None else carried,
                        free_consumed_size=0)
            figures = {
                "charged_quota_size": row.charged_quota_size,
                "charged_consumed_size": row.charged_consumed_size,
                "monthly_free_quota_size": row.monthly_free_quota_size,
                "monthly_free_consumed_size": row.monthly_free_consumed_size,
                "sp_free_quota_size": row.free_quota_remaining,
                "free_consumed_size": row.free_consumed_size,
            }
            remain = left_of(row).total
        consumed = (figures["charged_consumed_size"] + figures["monthly_free_consumed_size"]
                    + figures["free_consumed_size"])
        return {"bucket": bucket_name, "year_month": year_month, **figures,
                "consumed_size": consumed, "remain_quota_size": remain}

    def history(self, bucket_name: str, months: int) -> list[dict[str, Any]]:
        """What each of the last ``months`` UTC months consumed, newest first; months without reads are zeros."""
        wanted = recent_months(year_month_of(self.clock()), months)
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            rows = session.execute(
                select(T.year_month, T.charged_consumed_size, T.monthly_free_consumed_size, T.free_consumed_size)
                .where(T.bucket_id == bucket.id, T.year_month >= wanted[-1], T.year_month <= wanted[0])
            ).all()
        found = {row[0]: row[1:] for row in rows}
        history = []
        for year_month in wanted:
            charged, monthly_free, free = found.get(year_month, (0, 0, 0))
            history.append({"year_month": year_month, "charged_consumed_size": charged,
                            "monthly_free_consumed_size": monthly_free, "free_consumed_size": free,
                            "consumed_size": charged + monthly_free + free})
        return history

    def read_records(self, bucket_name: str, start_us: int, end_us: int, max_records: int,
                     cursor: str | None) -> dict[str, Any]:
        """Records in ``[start_us, end_us)`` by (timestamp, id): the cursor resumes exactly after the last."""
        page = self.read_record_page(bucket_name, start_us, end_us, max_records, cursor)
        return {
            "read_records": [dict(zip(READ_RECORD_FIELDS, row, strict=True)) for row in page.rows],
            "next_cursor": page.next_cursor,
            # Greenfield's field: where the next page starts (0 when the listing is complete). Several
            # records can share that timestamp, so only next_cursor resumes without repeats.
            "next_start_timestamp_us": page.next_start_timestamp_us,
        }

    def read_record_page(self, bucket_name: str, start_us: int, end_us: int, max_records: int,
                         cursor: str | None) -> RecordPage:
        """One page of read records as tuples of ``READ_RECORD_FIELDS`` (for JSON and CSV alike).

        A page is at most ``max_records`` (1000) rows of a few columns; they are fetched in one query
        so that the connection is back in the pool before a slow client reads the answer."""
        if start_us > end_us:
            raise InvalidArgument("start_timestamp_us must not be greater than end_timestamp_us")
        after = decode_cursor(cursor, int, int) if cursor else None
        R = ReadRecord
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, bucket_name)
            query = select(R.object_name, R.object_id, R.checksum, R.account, R.timestamp_us, R.read_size, R.id).where(
                R.bucket_id == bucket.id, read_records_after(start_us, after), R.timestamp_us < end_us)
            rows = session.execute(query.order_by(R.timestamp_us, R.id).limit(max_records + 1)).all()
        more = len(rows) > max_records
        rows = rows[:max_records]
        last = rows[-1] if more else None
        return RecordPage(rows=[tuple(row[:-1]) for row in rows],
                          next_cursor=encode_cursor(last.timestamp_us, last.id) if last is not None else None,
                          next_start_timestamp_us=last.timestamp_us if last is not None else 0)
