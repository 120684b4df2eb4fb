"""Database engine and transactions: PostgreSQL (psycopg2) in production, SQLite for the embedded default."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    String,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from storage_core.errors import DatabaseUnavailable
from storage_core.settings import Settings


def database_url(raw: str) -> URL:
    """The URL with psycopg2 as PostgreSQL driver (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://)."""
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    return url


def make_engine(settings: Settings, autocommit: bool = False) -> Engine:
    """The engine; ``autocommit`` for one of its own whose connections never open a transaction (reads
    of one statement: no COMMIT round trip, and no isolation level switched back and forth per use)."""
    url = database_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        settings.data_path.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets readers go on while a writer commits; foreign keys are off by default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            if not autocommit:
                # SQLAlchemy's "begin" below opens each transaction, instead of pysqlite before the first write
                dbapi_connection.isolation_level = None

        if not autocommit:
            @event.listens_for(engine, "begin")
            def _begin_immediate(conn):
                # Every transaction takes the database's write lock when it begins: a charge reads the month
                # row and writes it back under that lock (SQLite's FOR UPDATE), and a deferred transaction
                # that reads first and writes later would fail with SQLITE_BUSY instead of waiting.
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    timeout_ms = settings.db_timeout * 1000
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        # No overflow: connections opened beyond the pool would be closed at once on return, and a busy
        # worker would open and close one for most requests. Requests wait briefly for a pooled one;
        # connections are held only to resolve and to charge, never while a body streams.
        max_overflow=0,
        pool_timeout=settings.db_timeout,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
        # read by PreparedQuery on every connection of this engine (STORAGE_DB_PREPARE)
        execution_options={PREPARE_OPTION: settings.db_prepare},
        connect_args={
            "connect_timeout": settings.db_timeout,
            # the server gives up on a statement or a lock wait by itself; a server that does not answer
            # at all is cut off on our side (serving.gevent_wait_callback)
            "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
        },
    )
    ping_when_idle(engine, IDLE_BEFORE_PING)
    return engine


# A connection that sat in the pool longer than this is pinged before use (a database restart shows
# there, not in a request); busy connections are not, which saves a round trip per checkout.
IDLE_BEFORE_PING = 1.0


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's pre-ping, but only for connections that have been idle (pessimistic disconnects)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        if time.monotonic() - record.info.get("checked_in", 0.0) < idle_seconds:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            # the pool discards this connection and checks out (or opens) another
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def is_disconnect(exc: BaseException) -> bool:
    """Whether a database error means the database cannot be reached (as opposed to a bad query).

    A timed-out wait for a pooled connection counts: the database is too slow to answer in time.
    """
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


def among(session: Session | Connection, column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN (values)`` of strings. On PostgreSQL ``= ANY(CAST(:text AS VARCHAR[]))`` with the values as one
    array literal: one parameter however many values (an IN list renders a bind per value in Python at each
    execution), and one string for psycopg2 to quote (it takes 1.5 ms to adapt a list of 1,000, 0.1 ms a
    string); the same plan as an IN list (an index scan with the array as its condition)."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(cast(bindparam(None, array_literal(values), type_=String), postgresql.ARRAY(String)))
    return column.in_(values)


def array_literal(values: Iterable[str]) -> str:
    """PostgreSQL's text form of a one-dimensional array of these strings (each quoted: any text is safe)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One explicit transaction; an unreachable database becomes ``DatabaseUnavailable`` (fail closed)."""
    try:
        with factory() as session, session.begin():
            yield session
    except (DBAPIError, PoolTimeout) as exc:
        _raise_if_unavailable(exc)
        raise


@contextlib.contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection without an ORM session (lighter, for the download path's autocommit reads);
    errors as in ``transaction``."""
    try:
        with engine.connect() as conn:
            yield conn
    except (DBAPIError, PoolTimeout) as exc:
        _raise_if_unavailable(exc)
        raise


def _raise_if_unavailable(exc: DBAPIError | PoolTimeout) -> None:
    if is_disconnect(exc):
        raise DatabaseUnavailable(f"database unavailable: {type(getattr(exc, 'orig', exc)).__name__}") from exc



class PreparedQuery:
    """A hot SELECT that PostgreSQL plans once per connection instead of once per execution.

    Planning a six-table join costs PostgreSQL about 0.3 ms, twice what executing it does: on the
    download path that was most of the database's CPU per request. On PostgreSQL the statement is
    sent once per pooled connection as ``PREPARE name (types) AS ...`` and then run with
    ``EXECUTE name (...)`` (no SQLAlchemy compilation either); elsewhere (SQLite, which caches its
    own statements) it is executed as the Core statement it is built from. Rows are the driver's
    values (a ``bytea`` column comes back as ``memoryview``), with the statement's column labels.

    Constants inside the statement are sent as arguments too; an expanding ``IN`` cannot be prepared.

    An engine made with ``STORAGE_DB_PREPARE`` off (execution option ``PREPARE_OPTION``) sends the same
    statement as a plain one instead, with the same driver values: a pooler in transaction mode (PgBouncer)
    hands each transaction any server connection, so a statement prepared on one is unknown on the next
    (or, prepared again, already exists there).
    """

    _dialect = postgresql.psycopg2.dialect(paramstyle="numeric_dollar")
    _plain_dialect = postgresql.psycopg2.dialect(paramstyle="format")

    def __init__(self, name: str, statement: Select[Any]):
        compiled = statement.compile(dialect=self._dialect)
        names = compiled.positiontup or []
        if any(compiled.binds[n].expanding for n in names):
            raise ValueError(f"{name}: an expanding IN cannot be prepared; compare with == and or_()")
        types = ", ".join(self._dialect.type_compiler_instance.process(compiled.binds[n].type) for n in names)
        self.name = name
        self.statement = statement
        self._names = tuple(names)
        self._constants = {n: compiled.binds[n].value for n in names}
        self._prepare = f"PREPARE {name} ({types}) AS {compiled.string}".replace("%", "%%")
        self._execute = f"EXECUTE {name} ({', '.join(['%s'] * len(names))})" if names else f"EXECUTE {name}"
        plain = statement.compile(dialect=self._plain_dialect)
        self._plain = plain.string
        self._plain_names = tuple(plain.positiontup or [])

    def all(self, connection: Connection, **params: Any) -> list[Row[Any]]:
        if connection.dialect.name != "postgresql":
            return list(connection.execute(self.statement, params).all())
        if not connection.get_execution_options().get(PREPARE_OPTION, True):
            return list(connection.exec_driver_sql(
                self._plain, tuple(params[n] if n in params else self._constants[n] for n in self._plain_names)).all())
        # the set lives as long as the server connection: a reconnect prepares again
        prepared = connection.connection.info.setdefault("prepared_queries", set())
        values = tuple(params[n] if n in params else self._constants[n] for n in self._names)
        if self.name in prepared:
            try:
                return list(connection.exec_driver_sql(self._execute, values).all())
            except DBAPIError as exc:
                # deallocated behind our back (DEALLOCATE ALL, DISCARD ALL of a connection pooler)
                if getattr(exc.orig, "pgcode", None) != INVALID_SQL_STATEMENT_NAME:
                    raise
                prepared.discard(self.name)
                if not getattr(connection.connection.dbapi_connection, "autocommit", False):
                    raise  # a transaction is aborted by the error: the caller's next try prepares again
        connection.exec_driver_sql(self._prepare)
        prepared.add(self.name)
        return list(connection.exec_driver_sql(self._execute, values).all())


INVALID_SQL_STATEMENT_NAME = "26000"
# engine execution option: False sends PreparedQuery statements as plain ones (STORAGE_DB_PREPARE=0)
PREPARE_OPTION = "storage_prepare"
