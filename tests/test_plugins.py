"""Tests of the location plugins against real files and a real S3 protocol server (moto)."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
from minio.helpers import MIN_PART_SIZE

from plugins.local import LocalLocation
from plugins.s3 import S3Location
from storage_core.errors import InvalidArgument, PieceMissing, StorageUnavailable
from storage_core.plugin import READ_CHUNK, LocationPlugin, PluginRegistry
from tests.support.s3server import S3Server

MiB = 1024 * 1024
CHECKSUM = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4


def payload(size: int, seed: int = 0) -> bytes:
    """Bytes whose every position differs from its neighbours, so an off-by-one read shows."""
    pattern = bytes((i * 7 + seed) % 251 for i in range(251))
    return (pattern * (size // len(pattern) + 1))[:size]


def read_all(plugin: LocationPlugin, checksum: str, index: int, offset: int, length: int) -> bytes:
    chunks = list(plugin.read_piece(checksum, index, offset, length))
    assert all(0 < len(chunk) <= READ_CHUNK for chunk in chunks)
    return b"".join(chunks)


class FailingStream(io.RawIOBase):
    """Yields ``good`` bytes, then raises ``error``: an upload whose client went away."""

    def __init__(self, good: bytes, error: BaseException):
        self._data = io.BytesIO(good)
        self._error = error

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        if not chunk:
            raise self._error
        return chunk


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocationPlugin]:
    plugin: LocationPlugin
    if request.param == "local":
        plugin = LocalLocation({"root": str(tmp_path / "store")})
        plugin.prepare()  # as when the location is added
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        plugin = S3Location(server.config(request.getfixturevalue("s3_bucket_name")))
    yield plugin
    plugin.close()


@pytest.fixture
def local(tmp_path: Path) -> LocalLocation:
    plugin = LocalLocation({"root": str(tmp_path / "store")})
    plugin.prepare()
    return plugin


@pytest.fixture
def s3(s3_server: S3Server, s3_bucket_name: str) -> Iterator[S3Location]:
    plugin = S3Location(s3_server.config(s3_bucket_name))
    yield plugin
    plugin.close()


def leftover_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


# --- data path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 123], ids=["empty", "1-byte", "multi-MiB"])
def test_round_trip(location: LocationPlugin, size: int) -> None:
    data = payload(size)
    location.write_piece(CHECKSUM, 0, io.BytesIO(data), size)

    assert location.piece_exists(CHECKSUM, 0)
    assert read_all(location, CHECKSUM, 0, 0, size) == data


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 1),
        (0, 2 * MiB + 17),
        (1, READ_CHUNK),
        (READ_CHUNK - 1, 2),
        (READ_CHUNK, READ_CHUNK + 5),
        (2 * MiB + 16, 1),
        (12345, 0),
        (2 * MiB + 17, 0),
    ],
)
def test_ranged_read_equals_slicing(location: LocationPlugin, offset: int, length: int) -> None:
    data = payload(2 * MiB + 17, seed=3)
    location.write_piece(CHECKSUM, 4, io.BytesIO(data), len(data))

    assert read_all(location, CHECKSUM, 4, offset, length) == data[offset : offset + length]


def test_pieces_of_one_file_are_kept_apart(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"first"), 5)
    location.write_piece(CHECKSUM, 1, io.BytesIO(b"second"), 6)
    location.write_piece(OTHER, 0, io.BytesIO(b"other"), 5)

    assert read_all(location, CHECKSUM, 0, 0, 5) == b"first"
    assert read_all(location, CHECKSUM, 1, 0, 6) == b"second"
    assert read_all(location, OTHER, 0, 0, 5) == b"other"


def test_rewrite_replaces_the_piece(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"old bytes"), 9)
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"new bytes"), 9)

    assert read_all(location, CHECKSUM, 0, 0, 9) == b"new bytes"


def test_write_takes_exactly_length_bytes(location: LocationPlugin) -> None:
    stream = io.BytesIO(b"0123456789")
    location.write_piece(CHECKSUM, 0, stream, 4)

    assert read_all(location, CHECKSUM, 0, 0, 4) == b"0123"
    assert stream.read() == b"456789"


def test_missing_piece(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)

    assert not location.piece_exists(CHECKSUM, 1)
    with pytest.raises(PieceMissing):
        read_all(location, CHECKSUM, 1, 0, 1)
    with pytest.raises(PieceMissing):
        read_all(location, OTHER, 0, 0, 0)


@pytest.mark.parametrize(("offset", "length"), [(0, 11), (5, 6), (10, 1), (11, 0), (20, 1)])
def test_read_past_the_end_is_a_truncated_piece(location: LocationPlugin, offset: int, length: int) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"0123456789"), 10)

    with pytest.raises(PieceMissing):
        read_all(location, CHECKSUM, 0, offset, length)


def test_delete_is_idempotent(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"abc"), 3)
    location.write_piece(CHECKSUM, 1, io.BytesIO(b"def"), 3)

    location.delete_piece(CHECKSUM, 0)
    location.delete_piece(CHECKSUM, 0)
    location.delete_piece(OTHER, 7)

    assert not location.piece_exists(CHECKSUM, 0)
    assert location.piece_exists(CHECKSUM, 1)
    with pytest.raises(PieceMissing):
        read_all(location, CHECKSUM, 0, 0, 3)


# --- atomic writes --------------------------------------------------------------------------------


def assert_nothing_stored(plugin: LocationPlugin, tmp_path: Path) -> None:
    assert not plugin.piece_exists(CHECKSUM, 0)
    assert list(plugin.list_pieces()) == []
    if isinstance(plugin, LocalLocation):
        # no temporary file is left behind either
        assert leftover_files(tmp_path / "store") == []


@pytest.mark.parametrize("error", [RuntimeError("client went away"), OSError("connection reset")])
def test_failing_stream_stores_nothing_and_its_error_propagates(
    location: LocationPlugin, tmp_path: Path, error: Exception
) -> None:
    stream = FailingStream(payload(MiB + MiB // 2), error)

    # the upload's own failure is not the location's: it must not read as StorageUnavailable
    with pytest.raises(type(error)) as raised:
        location.write_piece(CHECKSUM, 0, stream, 3 * MiB)

    assert raised.value is error
    assert_nothing_stored(location, tmp_path)


def test_short_stream_stores_nothing(location: LocationPlugin, tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable) as raised:
        location.write_piece(CHECKSUM, 0, io.BytesIO(payload(1000)), 1001)

    assert not isinstance(raised.value, PieceMissing)
    assert_nothing_stored(location, tmp_path)


def test_failed_rewrite_keeps_the_old_piece(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"kept"), 4)

    with pytest.raises(RuntimeError):
        location.write_piece(CHECKSUM, 0, FailingStream(b"ne", RuntimeError("boom")), 4)

    assert read_all(location, CHECKSUM, 0, 0, 4) == b"kept"


# --- listing --------------------------------------------------------------------------------------


def test_list_pieces_lists_what_was_written(location: LocationPlugin) -> None:
    written = {(CHECKSUM, 0), (CHECKSUM, 1), (CHECKSUM, 12), (OTHER, 0)}
    for checksum, index in written:
        location.write_piece(checksum, index, io.BytesIO(b"p"), 1)
    location.delete_piece(CHECKSUM, 1)

    listed = list(location.list_pieces())

    assert sorted(listed) == sorted(written - {(CHECKSUM, 1)})


def test_list_pieces_of_an_empty_location(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"p"), 1)
    location.delete_piece(CHECKSUM, 0)

    assert list(location.list_pieces()) == []


def test_listing_a_missing_root_or_bucket_fails(
    tmp_path: Path, s3_server: S3Server, s3_bucket_name: str
) -> None:
    # "nothing listed" must not be mistaken for "every piece is gone" when the volume is unmounted
    with pytest.raises(StorageUnavailable):
        list(LocalLocation({"root": str(tmp_path / "unmounted")}).list_pieces())
    with pytest.raises(StorageUnavailable):
        list(S3Location(s3_server.config(s3_bucket_name)).list_pieces())


def test_local_list_pieces_skips_temp_and_foreign_files(local: LocalLocation, tmp_path: Path) -> None:
    local.write_piece(CHECKSUM, 3, io.BytesIO(b"p"), 1)
    leaf = tmp_path / "store" / "pieces" / CHECKSUM[0:2] / CHECKSUM[2:4]
    (leaf / ".tmp-abc123").write_bytes(b"partial")
    (leaf / f"{CHECKSUM}.x").write_bytes(b"")
    (leaf / f"{CHECKSUM}.01").write_bytes(b"")
    (leaf / f"{OTHER}.0").write_bytes(b"")  # in the wrong fan-out directory
    (tmp_path / "store" / "pieces" / "README").write_bytes(b"")

    assert list(local.list_pieces()) == [(CHECKSUM, 3)]


def test_local_remove_partial_writes_takes_only_old_temp_files(local: LocalLocation, tmp_path: Path) -> None:
    local.write_piece(CHECKSUM, 0, io.BytesIO(b"p"), 1)
    leaf = tmp_path / "store" / "pieces" / CHECKSUM[0:2] / CHECKSUM[2:4]
    old, fresh = leaf / ".tmp-dead", leaf / ".tmp-running"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))

    assert local.remove_partial_writes(time.time() - 3600) == 1
    assert not old.exists() and fresh.exists()
    assert read_all(local, CHECKSUM, 0, 0, 1) == b"p"


def test_local_remove_partial_writes_tolerates_writes_finishing_during_the_scan(
    local: LocalLocation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the race gc met in CI: a write renamed its temporary file into place between the
    # directory scan and the stat of that entry; a real rename cannot be timed into that gap
    import plugins.local

    leaf = tmp_path / "store" / "pieces" / CHECKSUM[0:2] / CHECKSUM[2:4]
    leaf.mkdir(parents=True)
    (leaf / ".tmp-finishing").write_bytes(b"p")
    scan = plugins.local._entries

    def scan_then_finish(directory: Path) -> list[os.DirEntry[str]]:
        entries = scan(directory)
        if directory == leaf:
            (leaf / ".tmp-finishing").rename(leaf / f"{CHECKSUM}.0")
        return entries

    monkeypatch.setattr(plugins.local, "_entries", scan_then_finish)
    assert local.remove_partial_writes(time.time() + 60) == 0
    assert read_all(local, CHECKSUM, 0, 0, 1) == b"p"


def test_s3_prefixes_keep_locations_apart(s3_server: S3Server, s3_bucket_name: str) -> None:
    first = S3Location(s3_server.config(s3_bucket_name, prefix="one"))
    second = S3Location(s3_server.config(s3_bucket_name, prefix="two/"))
    first.write_piece(CHECKSUM, 0, io.BytesIO(b"1"), 1)
    second.write_piece(OTHER, 5, io.BytesIO(b"2"), 1)

    assert list(first.list_pieces()) == [(CHECKSUM, 0)]
    assert list(second.list_pieces()) == [(OTHER, 5)]
    assert not second.piece_exists(CHECKSUM, 0)


def test_plugins_without_listing_say_so() -> None:
    class Minimal(LocalLocation):
        name = "minimal"
        list_pieces = LocationPlugin.list_pieces

    with pytest.raises(NotImplementedError, match="minimal cannot list pieces"):
        Minimal({"root": "/nonexistent"}).list_pieces()


# --- piece addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checksum", "index"),
    [
        (CHECKSUM.upper(), 0),
        (CHECKSUM[:-1], 0),
        (CHECKSUM + "0", 0),
        ("../" + CHECKSUM[3:], 0),
        (CHECKSUM[:-1] + "/", 0),
        (CHECKSUM[:-1] + "\n", 0),
        (CHECKSUM, -1),
        (CHECKSUM, True),
        (CHECKSUM, "1"),
        (CHECKSUM, 1.0),
    ],
)
def test_invalid_piece_address_is_rejected(location: LocationPlugin, checksum: Any, index: Any) -> None:
    with pytest.raises(ValueError):
        location.write_piece(checksum, index, io.BytesIO(b"x"), 1)
    with pytest.raises(ValueError):
        list(location.read_piece(checksum, index, 0, 1))
    with pytest.raises(ValueError):
        location.piece_exists(checksum, index)
    with pytest.raises(ValueError):
        location.delete_piece(checksum, index)


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1), (0.0, 1), (0, None)])
def test_invalid_range_is_rejected(location: LocationPlugin, offset: Any, length: Any) -> None:
    with pytest.raises(ValueError):
        list(location.read_piece(CHECKSUM, 0, offset, length))


# --- health and failures --------------------------------------------------------------------------


def test_health_ok(location: LocationPlugin) -> None:
    location.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)

    location.health()


def test_local_health_needs_the_root(tmp_path: Path) -> None:
    missing = LocalLocation({"root": str(tmp_path / "unmounted")})
    with pytest.raises(StorageUnavailable):
        missing.health()
    # the root is not created by looking at it, nor by writing (the mount point of an unmounted volume
    # must not fill up): only by prepare(), when the location is added
    assert not (tmp_path / "unmounted").exists()
    with pytest.raises(StorageUnavailable, match="missing"):
        missing.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)
    assert not (tmp_path / "unmounted").exists()

    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        LocalLocation({"root": str(tmp_path / "a-file")}).health()
    with pytest.raises(StorageUnavailable, match="cannot be created"):
        LocalLocation({"root": str(tmp_path / "a-file" / "below")}).prepare()

    missing.prepare()
    missing.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)
    missing.health()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_local_health_needs_a_writable_root(tmp_path: Path) -> None:
    root = tmp_path / "read-only"
    root.mkdir(mode=0o555)
    with pytest.raises(StorageUnavailable):
        LocalLocation({"root": str(root)}).health()


def test_local_unwritable_root_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    plugin = LocalLocation({"root": str(tmp_path / "a-file")})

    with pytest.raises(StorageUnavailable):
        plugin.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)


def test_local_read_closes_the_file_when_abandoned(local: LocalLocation) -> None:
    local.write_piece(CHECKSUM, 0, io.BytesIO(payload(3 * MiB)), 3 * MiB)
    piece = next(local.root.rglob(f"{CHECKSUM}.0")).resolve()

    def open_on_piece() -> int:
        return sum(
            os.path.realpath(f"/proc/self/fd/{fd}") == str(piece) for fd in os.listdir("/proc/self/fd")
        )

    reader = local.read_piece(CHECKSUM, 0, 0, 3 * MiB)
    assert len(next(reader)) == READ_CHUNK
    assert open_on_piece() == 1
    reader.close()
    assert open_on_piece() == 0


def test_local_without_fsync(tmp_path: Path) -> None:
    plugin = LocalLocation({"root": str(tmp_path / "store"), "fsync": False})
    plugin.prepare()
    plugin.write_piece(CHECKSUM, 0, io.BytesIO(b"abc"), 3)

    assert read_all(plugin, CHECKSUM, 0, 0, 3) == b"abc"


def test_s3_health_needs_the_bucket(s3_server: S3Server, s3_bucket_name: str) -> None:
    with pytest.raises(StorageUnavailable):
        S3Location(s3_server.config(s3_bucket_name, create_bucket=False)).health()

    # create_bucket makes the bucket at the first write, after which the location is healthy
    plugin = S3Location(s3_server.config(s3_bucket_name, create_bucket=True))
    plugin.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)
    plugin.health()


def test_s3_missing_bucket_is_unavailable_not_missing_piece(s3_server: S3Server, s3_bucket_name: str) -> None:
    plugin = S3Location(s3_server.config(s3_bucket_name, create_bucket=False))

    with pytest.raises(StorageUnavailable) as raised:
        plugin.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)
    assert not isinstance(raised.value, PieceMissing)
    with pytest.raises(StorageUnavailable) as raised:
        list(plugin.read_piece(CHECKSUM, 0, 0, 1))
    assert not isinstance(raised.value, PieceMissing)
    # S3 answers a HEAD without a body, so minio reports a missing bucket as NoSuchKey there
    with pytest.raises(StorageUnavailable):
        plugin.piece_exists(CHECKSUM, 0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_unreachable_endpoint_fails_fast(s3_server: S3Server, s3_bucket_name: str) -> None:
    plugin = S3Location(s3_server.config(s3_bucket_name, endpoint=f"127.0.0.1:{closed_port()}"))

    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        list(plugin.read_piece(CHECKSUM, 0, 0, 10))
    assert not isinstance(raised.value, PieceMissing)
    with pytest.raises(StorageUnavailable):
        plugin.health()
    with pytest.raises(StorageUnavailable):
        plugin.write_piece(CHECKSUM, 0, io.BytesIO(b"x"), 1)
    assert time.monotonic() - started < 10


def test_s3_multipart_upload(
    s3_server: S3Server, s3_bucket_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the smallest part size S3 allows, so a three-part upload needs only 11 MiB
    monkeypatch.setattr(S3Location, "part_size", MIN_PART_SIZE)
    plugin = S3Location(s3_server.config(s3_bucket_name))
    data = payload(2 * MIN_PART_SIZE + MiB, seed=5)

    plugin.write_piece(CHECKSUM, 0, io.BytesIO(data), len(data))
    assert read_all(plugin, CHECKSUM, 0, 0, len(data)) == data
    offset = MIN_PART_SIZE - 3
    assert read_all(plugin, CHECKSUM, 0, offset, 7) == data[offset : offset + 7]

    # a stream failing in the second part aborts the upload: nothing becomes visible
    with pytest.raises(StorageUnavailable):
        plugin.write_piece(OTHER, 0, io.BytesIO(data[: MIN_PART_SIZE + 10]), len(data))
    assert not plugin.piece_exists(OTHER, 0)
    assert list(plugin.list_pieces()) == [(CHECKSUM, 0)]


def test_s3_close_drops_the_client(s3: S3Location) -> None:
    s3.write_piece(CHECKSUM, 0, io.BytesIO(b"abc"), 3)
    s3.close()

    assert read_all(s3, CHECKSUM, 0, 0, 3) == b"abc"


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"fsync": True},
        {"root": "relative/path"},
        {"root": ""},
        {"root": 42},
        {"root": "/srv/pieces", "fsync": "maybe"},
        {"root": "/srv/pieces", "extra": 1},
    ],
)
def test_local_config_rejects(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        LocalLocation.validate_config(config)


def test_local_config_defaults() -> None:
    assert LocalLocation.validate_config({"root": "/srv/pieces"}) == {"root": "/srv/pieces", "fsync": True}


S3_VALID = {"endpoint": "minio.internal:9000", "access_key": "AK", "secret_key": "SK", "bucket": "pieces"}


@pytest.mark.parametrize(
    "change",
    [
        {"endpoint": None},
        {"access_key": None},
        {"secret_key": None},
        {"bucket": None},
        {"endpoint": "http://minio.internal:9000"},
        {"endpoint": "minio.internal:9000/path"},
        {"endpoint": "minio.internal:99999"},
        {"endpoint": 9000},
        {"access_key": ""},
        {"bucket": "Not_A_Bucket"},
        {"bucket": "ab"},
        {"bucket": "192.168.1.1"},
        {"secure": "sometimes"},
        {"create_bucket": []},
        {"region": 1},
        {"prefix": "/rooted"},
        {"unknown": "field"},
    ],
)
def test_s3_config_rejects(change: dict[str, Any]) -> None:
    # None in ``change`` means: leave the field out
    config = {**S3_VALID, **change}
    config = {key: value for key, value in config.items() if value is not None}

    with pytest.raises(InvalidArgument):
        S3Location.validate_config(config)


def test_s3_config_defaults_and_prefix() -> None:
    loaded = S3Location.validate_config({**S3_VALID, "prefix": "tenant/a"})

    assert loaded == {
        **S3_VALID,
        "secure": True,
        "region": None,
        "prefix": "tenant/a/",
        "create_bucket": False,
    }
    # loading what was loaded changes nothing (configs are stored loaded)
    assert S3Location.validate_config(loaded) == loaded
    assert S3Location.validate_config({**S3_VALID, "endpoint": "[::1]:9000"})["endpoint"] == "[::1]:9000"


def test_public_config_hides_the_secret_key() -> None:
    public = S3Location.public_config(S3Location.validate_config(S3_VALID))

    assert "secret_key" not in public
    assert public["access_key"] == "AK"
    assert LocalLocation.public_config({"root": "/srv", "fsync": True}) == {"root": "/srv", "fsync": True}


def test_validate_config_needs_an_object() -> None:
    with pytest.raises(InvalidArgument):
        S3Location.validate_config(["not", "a", "mapping"])


# --- registry -------------------------------------------------------------------------------------


def test_registry_finds_both_plugins_by_entry_point() -> None:
    try:
        distribution("storage-service")
    except PackageNotFoundError:
        pytest.skip("storage-service is not installed (pip install -e .), so no entry points exist")

    registry = PluginRegistry.from_entry_points()

    assert {"local", "s3"} <= set(registry.names())
    assert registry.get("local") is LocalLocation
    assert registry.get("s3") is S3Location
