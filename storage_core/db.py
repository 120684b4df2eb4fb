"""Database engine and transactions: PostgreSQL (psycopg2) in production, SQLite for the embedded default."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sqlalchemy import URL, Engine, create_engine, event, make_url
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
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets readers go on while a writer commits; foreign keys are off by default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

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
    def _checked_in(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
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


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One explicit transaction; an unreachable database becomes ``DatabaseUnavailable`` (fail closed)."""
    try:
        with factory() as session, session.begin():
            yield session
    except (DBAPIError, PoolTimeout) as exc:
        if is_disconnect(exc):
            raise DatabaseUnavailable(f"database unavailable: {type(getattr(exc, 'orig', exc)).__name__}") from exc
        raise


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
