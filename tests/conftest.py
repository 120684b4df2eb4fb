"""Shared fixtures: a PostgreSQL database of the suite's own, apps under the active profile, seeding helpers.

The suite runs once per profile (``STORAGE_PROFILES``). Data is seeded through a container of the
full ``storage`` profile, as the storage service would; HTTP requests go to an app of the active
profile, as a client of that deployment would see it, with a real admin token unless a test asks for
another account (``auth``) or none (``anonymous``). Live servers and the S3 server are in
``tests/support/``.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from dependency_injector import providers
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

import profiles
from storage_core.app import create_app
from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.container import Container, build_container
from storage_core.db import database_url as database_url_of
from storage_core.migrations import upgrade
from storage_core.models import Base
from storage_core.services.uploads import ObjectMetadata
from storage_core.settings import Settings
from tests.support.auth import TEST_JWT_SECRET, AuthActions
from tests.support.servers import ACTIVE, GunicornServer, LiveServer

pytest_plugins = ["tests.support.s3server", "tests.support.browser"]

ADMIN_URL = os.environ.get("STORAGE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# the database the fixtures give: PostgreSQL (production's), or the embedded default's SQLite (`make test-sqlite`)
TEST_DATABASE = os.environ.get("STORAGE_TEST_DATABASE", "postgresql")
if TEST_DATABASE not in ("postgresql", "sqlite"):
    raise pytest.UsageError(f"STORAGE_TEST_DATABASE must be postgresql or sqlite, not {TEST_DATABASE!r}")
KiB = 1024


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "profile(name): needs this profile active")


def pytest_report_header() -> str:
    return f"active profiles: {', '.join(sorted(ACTIVE))}; database: {TEST_DATABASE}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("profile"):
        if marker.args[0] not in ACTIVE:
            pytest.skip(f"needs the {marker.args[0]} profile (active: {', '.join(sorted(ACTIVE))})")
    if TEST_DATABASE == "sqlite" and item.get_closest_marker("postgresql"):
        pytest.skip("needs PostgreSQL: " + (item.get_closest_marker("postgresql").kwargs.get("reason") or ""))


def _admin_execute(sql: str) -> None:
    connection = psycopg2.connect(ADMIN_URL)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this run, migrated with Alembic, dropped at the end: PostgreSQL, or a SQLite file
    (the embedded default) with STORAGE_TEST_DATABASE=sqlite."""
    if TEST_DATABASE == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'storage.db'}"
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    name = f"storage_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(database_url_of(url))
    try:
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # the data dir is where make_engine puts a SQLite file's directory; never the working directory's var/
    settings = Settings(database_url=database_url, data_dir=str(tmp_path_factory.getbasetemp() / "engine-var"))
    from storage_core.db import make_engine

    engine = make_engine(settings)
    yield engine
    engine.dispose()


AUTOCOMMIT_ENGINES: dict[str, Engine] = {}


def autocommit_engine_for(engine: Engine) -> Engine:
    """The autocommit engine of the download path, one per test database (pools are not per test)."""
    url = engine.url.render_as_string(hide_password=False)
    if url not in AUTOCOMMIT_ENGINES:
        from storage_core.db import make_engine

        # for SQLite the data dir is the file's own directory (make_engine creates it, never ./var)
        sqlite_file = make_url(url).database if engine.dialect.name == "sqlite" else None
        data_dir = str(Path(sqlite_file).parent) if sqlite_file else Settings().data_dir
        AUTOCOMMIT_ENGINES[url] = make_engine(Settings(database_url=url, data_dir=data_dir), autocommit=True)
    return AUTOCOMMIT_ENGINES[url]


def pytest_sessionfinish() -> None:
    for autocommit_engine in AUTOCOMMIT_ENGINES.values():
        autocommit_engine.dispose()


@pytest.fixture(autouse=True)
def _clean_database(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "engine" in request.fixturenames:
        engine: Engine = request.getfixturevalue("engine")
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                # no TRUNCATE: children first; ids restart by themselves (rowid is max + 1)
                for table in reversed(Base.metadata.sorted_tables):
                    connection.execute(table.delete())
                if connection.exec_driver_sql(
                        "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first():
                    connection.exec_driver_sql("DELETE FROM sqlite_sequence")
            else:
                tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Small pieces and blocks so multi-piece files stay small."""
    return Settings(database_url=database_url, data_dir=str(tmp_path / "var"), piece_size=64 * KiB,
                    block_size=16 * KiB, free_read_quota=1024 * 1024 * 1024,
                    monthly_free_read_quota=1024 * 1024 * 1024, jwt_secret=TEST_JWT_SECRET)


def make_container(settings: Settings, engine: Engine, active: frozenset[str]) -> Container:
    container = build_container(settings, active)
    container.engine.override(providers.Object(engine))
    container.autocommit_engine.override(providers.Object(autocommit_engine_for(engine)))
    return container


@pytest.fixture
def storage(settings: Settings, engine: Engine) -> Container:
    """Services of the full storage profile, for seeding data whatever profile is under test."""
    return make_container(settings, engine, frozenset({profiles.STORAGE}))


@pytest.fixture
def container(settings: Settings, engine: Engine) -> Container:
    return make_container(settings, engine, ACTIVE)


@pytest.fixture
def app(settings: Settings, container: Container):
    app = create_app(settings=settings, container=container)
    app.testing = True
    return app


@pytest.fixture
def auth(settings: Settings) -> AuthActions:
    return AuthActions(settings)


@pytest.fixture
def client(app, auth: AuthActions):
    """A client acting as an admin, through a real token."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = auth.admin["Authorization"]
    return client


@pytest.fixture
def anonymous(app):
    """A client without credentials."""
    return app.test_client()


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    return tmp_path / "hot"


@pytest.fixture
def local_location(storage: Container, local_root: Path) -> str:
    storage.location_service().create({"name": "hot", "plugin": "local", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": {"root": str(local_root)}})
    return "hot"


@pytest.fixture
def cold_root(tmp_path: Path) -> Path:
    return tmp_path / "cold"


@pytest.fixture
def cold_location(storage: Container, cold_root: Path) -> str:
    """A second local location, cold, beside ``local_location``: the other copy a read fails over to."""
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(cold_root)}})
    return "cold"


@pytest.fixture
def s3_location(storage: Container, s3_server: Any, s3_bucket_name: str) -> str:
    storage.location_service().create({"name": "s3", "plugin": "s3", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": s3_server.config(s3_bucket_name)})
    return "s3"


@pytest.fixture(params=["local", "s3"])
def any_location(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on a local location and once on an S3 location."""
    return request.getfixturevalue("local_location" if request.param == "local" else "s3_location")


def make_bucket(storage: Container, name: str = "bucket", **fields: Any) -> dict[str, Any]:
    data = {"name": name, "visibility": "public-read", "charged_read_quota": 0, "locations": [], "owner": "owner",
            **fields}
    return storage.bucket_service().create(data, DEVELOPMENT_ADMIN)


def put(storage: Container, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
        ) -> dict[str, Any]:
    stored = storage.upload_service().put(bucket, key, io.BytesIO(data), length=len(data),
                                          metadata=ObjectMetadata(content_type=content_type))
    return stored.view


@pytest.fixture
def live_server(app):
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def gunicorn_server(settings: Settings) -> Iterator[GunicornServer]:
    server = GunicornServer(settings)
    yield server
    server.stop()
