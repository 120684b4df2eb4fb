"""`storage-admin`: migrations on the embedded SQLite default, first-run setup, garbage collection."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage_core.cli import main
from storage_core.models import CopyState, FileCopy
from storage_core.services.resolve import ByKey
from storage_core.spool import Spool
from tests.conftest import KiB, make_bucket, put


def run_admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storage_core.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_db_upgrade_and_bootstrap_on_sqlite(tmp_path: Path):
    env = {"STORAGE_DATA_DIR": str(tmp_path / "var"), "STORAGE_DATABASE_URL": ""}
    assert run_admin(env, "db", "upgrade").returncode == 0
    assert (tmp_path / "var" / "storage.db").exists()
    boot = run_admin(env, "bootstrap")
    assert boot.returncode == 0, boot.stderr
    assert "created storage location 'local'" in boot.stdout and "created bucket 'default'" in boot.stdout
    again = run_admin(env, "bootstrap")  # idempotent
    assert "created" not in again.stdout
    listed = json.loads(run_admin(env, "location", "list").stdout)
    assert [loc["name"] for loc in listed] == ["local"]
    assert listed[0]["config"]["root"] == str(tmp_path / "var" / "locations" / "local")


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """The environment of `storage-admin` on a fresh embedded database (SQLite under tmp_path)."""
    env = {"STORAGE_DATA_DIR": str(tmp_path / "var"), "STORAGE_DATABASE_URL": ""}
    upgraded = run_admin(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    return env


@pytest.mark.parametrize(("args", "mentions"), [
    (("bucket", "add", "Bad_Name"), "lower-case letters"),
    (("bucket", "add", "xn--abc"), "'xn--' (reserved by S3)"),
    (("bucket", "add", "abc-s3alias"), "'-s3alias' (reserved by S3)"),
    (("location", "add", "ho\nt", "--config", '{"root": "/tmp/never-used"}'), "location names"),
])
def test_storage_admin_refuses_the_names_the_api_refuses(sqlite_env: dict[str, str], args: tuple[str, ...],
                                                         mentions: str):
    result = run_admin(sqlite_env, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "InvalidArgument" in result.stderr and mentions in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    listed = run_admin(sqlite_env, args[0], "list")
    assert json.loads(listed.stdout) == [], "nothing was created"


def test_a_database_that_cannot_be_opened_is_named_in_the_error(tmp_path: Path):
    (tmp_path / "a-file").write_bytes(b"")
    under_a_file = tmp_path / "a-file" / "var"
    result = run_admin({"STORAGE_DATA_DIR": str(under_a_file), "STORAGE_DATABASE_URL": ""}, "bucket", "list")
    assert result.returncode == 1, result.stderr
    assert f"cannot open the database {under_a_file / 'storage.db'}" in result.stderr, result.stderr
    assert "STORAGE_DATA_DIR" in result.stderr and "Traceback" not in result.stderr

    missing_dir = tmp_path / "missing" / "x.db"
    result = run_admin({"STORAGE_DATABASE_URL": f"sqlite:///{missing_dir}"}, "bucket", "list")
    assert result.returncode == 1, result.stderr
    assert f"cannot open the database {missing_dir}" in result.stderr, result.stderr
    assert "STORAGE_DATABASE_URL" in result.stderr and "Traceback" not in result.stderr

    result = run_admin({"STORAGE_DATABASE_URL": "postgresql://someone:hunter2@127.0.0.1:1/storage"}, "bucket", "list")
    assert result.returncode == 1, result.stderr
    assert "cannot open the database postgresql://someone:***@127.0.0.1:1/storage" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_a_database_without_its_schema_says_to_upgrade(tmp_path: Path):
    result = run_admin({"STORAGE_DATA_DIR": str(tmp_path / "var"), "STORAGE_DATABASE_URL": ""}, "bucket", "list")
    assert result.returncode == 1, result.stderr
    assert str(tmp_path / "var" / "storage.db") in result.stderr
    assert "storage-admin db upgrade" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_token_ttl_must_be_positive(ttl: str, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["token", "issue", "--sub", "someone", "--ttl", ttl])
    assert exited.value.code == 2
    assert "--ttl" in capsys.readouterr().err


def test_bad_setting_is_reported_by_name(tmp_path: Path):
    result = run_admin({"STORAGE_PIECE_SIZE": "abc", "STORAGE_DATA_DIR": str(tmp_path)}, "db", "upgrade")
    assert result.returncode == 2
    assert "STORAGE_PIECE_SIZE" in result.stderr


@pytest.mark.profile("storage")
def test_gc_removes_abandoned_uploads_and_orphans_but_never_live_pieces(storage, local_location, local_root,
                                                                        monkeypatch):
    make_bucket(storage)
    live = put(storage, "bucket", "live", os.urandom(150 * KiB))
    # an upload that crashed after reserving and writing its pieces: a pending copy is left behind
    settings = storage.settings()
    with Spool(settings.spool_dir, settings.piece_size, settings.block_size) as spool:
        spool.receive(io.BytesIO(os.urandom(100 * KiB)), None, 0)
        content = storage.content_store()
        with storage.session_factory()() as session, session.begin():
            from storage_core.services.buckets import get_bucket
            from storage_core.services.uploads import target_locations

            pending = content.reserve(session, spool, target_locations(session, get_bucket(session, "bucket")), "x")
        plugin = storage.plugin_cache().plugin_for(pending[0].location)
        for index in range(spool.piece_count):
            with spool.piece_reader(index) as stream:
                plugin.write_piece(spool.sha256, index, stream, spool.piece_length(index))
        crashed = spool.sha256
    # and a stray piece nobody knows
    plugin.write_piece("f" * 64, 0, io.BytesIO(b"stray"), 5)

    fresh = storage.garbage_collector().collect(pending_grace_seconds=3600)
    assert fresh["abandoned_copies"] == 0  # too young: may still be running
    assert fresh["orphan_pieces"] == 1  # only the stray one

    report = storage.garbage_collector().collect(pending_grace_seconds=0)
    assert report["abandoned_copies"] == 1
    names = sorted(p.name for p in (local_root / "pieces").rglob("*") if p.is_file())
    assert names == sorted(f"{live['checksum']}.{i}" for i in range(live["piece_count"]))
    assert not any(n.startswith(crashed) for n in names)
    with storage.session_factory()() as session:
        states = session.scalars(select(FileCopy.state)).all()
    assert states == [CopyState.STORED]


def test_cli_gc_command_runs(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("STORAGE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("STORAGE_DATABASE_URL", "")
    assert main(["db", "upgrade"]) == 0
    assert main(["gc", "--dry-run"]) == 0
    assert '"orphan_pieces": 0' in capsys.readouterr().out


@pytest.mark.profile("storage")
def test_gc_removes_spool_files_of_dead_uploads_only_after_the_grace(storage):
    spool = Path(storage.settings().spool_dir)
    spool.mkdir(parents=True, exist_ok=True)
    dead, running = spool / "upload-dead", spool / "upload-running"
    dead.write_bytes(b"x")
    running.write_bytes(b"y")
    hour_ago = dead.stat().st_mtime - 7200
    os.utime(dead, (hour_ago, hour_ago))
    report = storage.garbage_collector().collect(pending_grace_seconds=3600)
    assert report["spool_files"] == 1
    assert not dead.exists() and running.exists()


@pytest.mark.profile("storage")
def test_gc_running_during_uploads_never_removes_live_pieces(storage, local_location, client):
    import hashlib
    import threading

    make_bucket(storage)
    contents = {f"k{i}": os.urandom(100 * KiB + i) for i in range(24)}
    stop = threading.Event()
    reports: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def collect() -> None:
        # at least two passes, so one overlaps the uploads even on a slow machine
        while not stop.is_set() or len(reports) < 2:
            try:
                reports.append(storage.garbage_collector().collect())
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
                return

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        def upload(key: str) -> None:
            put(storage, "bucket", key, contents[key])
            put(storage, "bucket", key + "-again", contents[key])  # dedup path: reuses stored pieces

        threads = [threading.Thread(target=upload, args=(key,)) for key in contents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        collector.join()
    assert errors == []
    assert len(reports) >= 2
    assert all(r["orphan_pieces"] == 0 and r["abandoned_copies"] == 0 for r in reports)
    for key, data in contents.items():
        for name in (key, key + "-again"):
            body = client.get(f"/api/v1/buckets/bucket/objects/{name}").data
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), name


def test_migration_0003_keeps_sha256_for_files_stored_before(tmp_path: Path):
    from sqlalchemy import create_engine, text

    from storage_core.migrations import upgrade

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO files (checksum, size, piece_size, piece_count, block_size, block_digests, md5, created_at)"
            " VALUES (:c, 1, 16, 1, 16, :d, :m, '2026-11-01 00:00:00')"),
            {"c": "a" * 64, "d": b"\0" * 32, "m": "0" * 32})
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT block_hash FROM files")).scalar_one() == "sha256"
    engine.dispose()


def test_migration_0003_refuses_to_downgrade_over_blake3_files(tmp_path: Path):
    from alembic import command
    from sqlalchemy import create_engine, text

    from storage_core.migrations import alembic_config, upgrade

    engine = create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO files (checksum, size, piece_size, piece_count, block_size, block_digests, block_hash,"
            " md5, created_at) VALUES (:c, 1, 16, 1, 16, :d, 'blake3', :m, '2026-11-01 00:00:00')"),
            {"c": "b" * 64, "d": b"\0" * 32, "m": "0" * 32})
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection, pytest.raises(RuntimeError, match="non-sha256 block digests"):
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    with engine.connect() as connection:  # nothing was dropped
        assert connection.execute(text("SELECT block_hash FROM files")).scalar_one() == "blake3"
    engine.dispose()


@pytest.mark.profile("storage")
def test_presign_revoke_command(storage, local_location, monkeypatch, capsys):
    from storage_core import cli
    from storage_core.auth import Principal

    make_bucket(storage, owner="olivia", visibility="private")
    put(storage, "bucket", "k", b"data")
    path, _ = storage.permission_service().presign(Principal("olivia"), "bucket", "k", 600)
    query = dict(part.split("=") for part in path.split("?")[1].split("&"))
    principal = storage.authenticator().verify_presigned("GET", "/api/v1/buckets/bucket/objects/k", query)
    monkeypatch.setattr(cli, "build_container", lambda *_args: storage)
    assert cli.main(["presign", "revoke", "--account", "olivia"]) == 0
    assert '"account": "olivia"' in capsys.readouterr().out
    with pytest.raises(Exception, match="no longer grants"):
        storage.resolver().resolve(ByKey("bucket", "k"), principal)
