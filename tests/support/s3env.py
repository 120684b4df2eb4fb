"""A running service with its S3 listener for a whole test module, and the real S3 clients pointed at it.

Starting gunicorn costs seconds, so the S3 suites share one service per module (``S3Env``): its own
settings and data directory, a local location, an admin access key and an ordinary account's key. The
module's tests do not use the function-scoped ``engine`` fixture, so the database is not truncated after
each of them; they use buckets of their own names, and the module truncates at its end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from dependency_injector import providers
from sqlalchemy import Engine, text

import profiles
from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.container import Container, build_container
from storage_core.db import make_engine
from storage_core.models import Base
from storage_core.settings import Settings
from tests.support.auth import TEST_JWT_SECRET
from tests.support.servers import GunicornServer

KiB = 1024
MiB = 1024 * KiB
REGION = "us-east-1"


def truncate(engine: Engine) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@dataclass
class Key:
    access_key_id: str
    secret: str
    account: str


@dataclass
class S3Env:
    settings: Settings
    storage: Container
    engine: Engine
    root: Path
    admin: Key
    user: Key
    servers: list[GunicornServer] = field(default_factory=list)

    @property
    def server(self) -> GunicornServer:
        return self.servers[0]

    def key(self, account: str, roles: list[str] | None = None) -> Key:
        made = self.storage.access_key_service().create(DEVELOPMENT_ADMIN, account, roles or [])
        return Key(made["access_key_id"], made["secret_access_key"], account)

    def client(self, key: Key | None = None, *, server: GunicornServer | None = None, **config: Any) -> Any:
        """A boto3 client with its default settings (checksums, retries, addressing) but for the endpoint."""
        key = key or self.admin
        return boto3.client("s3", endpoint_url=(server or self.server).s3_url, region_name=REGION,
                            aws_access_key_id=key.access_key_id, aws_secret_access_key=key.secret,
                            config=Config(**config) if config else None)


def s3_settings(database_url: str, tmp: Path, **changes: Any) -> Settings:
    return Settings(database_url=database_url, data_dir=str(tmp / "var"), piece_size=1 * MiB, block_size=64 * KiB,
                    free_read_quota=1 << 40, monthly_free_read_quota=1 << 40, jwt_secret=TEST_JWT_SECRET,
                    **changes)


@contextlib.contextmanager
def s3_env(database_url: str, tmp: Path, *, instances: int = 1, workers: int = 2,
           env: dict[str, str] | None = None, **changes: Any) -> Iterator[S3Env]:
    settings = s3_settings(database_url, tmp, **changes)
    engine = make_engine(settings)
    autocommit = make_engine(settings, autocommit=True)
    truncate(engine)
    storage = build_container(settings, frozenset({profiles.STORAGE}))
    storage.engine.override(providers.Object(engine))
    storage.autocommit_engine.override(providers.Object(autocommit))
    root = tmp / "hot"
    storage.location_service().create({"name": "hot", "plugin": "local", "tier": "hot", "priority": 0,
                                       "enabled": True, "config": {"root": str(root)}})
    made = S3Env(settings, storage, engine, root, Key("", "", ""), Key("", "", ""))
    made.admin = made.key("admin", ["admin"])
    made.user = made.key("olivia")
    try:
        for _ in range(instances):
            made.servers.append(GunicornServer(settings, workers=workers, s3=True,
                                               extra_env={"STORAGE_DB_POOL_SIZE": "3", **(env or {})}))
        yield made
    finally:
        for server in made.servers:
            server.stop()
        truncate(engine)
        engine.dispose()
        autocommit.dispose()
