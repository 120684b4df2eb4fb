"""`storage-admin verify`: scrubbing copies piece by piece, recording damage, repairing each piece from a good twin."""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import select, update

from storage_core.models import CopyState, DamagedPiece, FileCopy, StorageLocation
from tests.conftest import KiB, make_bucket, put

pytestmark = pytest.mark.profile("storage")

PIECE = 64 * KiB


@pytest.fixture
def two_copies(storage, local_location, local_root, tmp_path):
    cold_root = tmp_path / "cold"
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 0,
                                       "enabled": True, "config": {"root": str(cold_root)}})
    make_bucket(storage, locations=["hot", "cold"])
    data = os.urandom(3 * PIECE + 10)
    checksum = put(storage, "bucket", "k", data)["checksum"]
    return checksum, data, local_root, cold_root


def piece(root, checksum: str, index: int):
    return root / "pieces" / checksum[:2] / checksum[2:4] / f"{checksum}.{index}"


def damage(storage) -> dict[str, list[int]]:
    with storage.session_factory()() as session:
        rows = session.execute(select(StorageLocation.name, DamagedPiece.piece_index)
                               .join(FileCopy, FileCopy.id == DamagedPiece.copy_id)
                               .join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                               .order_by(StorageLocation.name, DamagedPiece.piece_index)).all()
    found: dict[str, list[int]] = {}
    for name, index in rows:
        found.setdefault(name, []).append(index)
    return found


def states(storage) -> dict[str, str]:
    with storage.session_factory()() as session:
        return dict(session.execute(select(StorageLocation.name, FileCopy.state)
                                    .join(StorageLocation, StorageLocation.id == FileCopy.location_id)).all())


def test_verify_finds_corrupt_and_missing_pieces_and_repairs_them(storage, two_copies):
    checksum, data, hot, _cold = two_copies
    damaged = bytearray(piece(hot, checksum, 1).read_bytes())
    damaged[5] ^= 1
    piece(hot, checksum, 1).write_bytes(bytes(damaged))
    piece(hot, checksum, 3).unlink()

    report = storage.scrubber().verify()
    assert report["copies_checked"] == 2 and report["copies_ok"] == 1
    assert report["copies_bad"] == [{"checksum": checksum, "location": "hot", "pieces": [1, 3]}]
    assert states(storage) == {"hot": CopyState.STORED, "cold": CopyState.STORED}
    assert damage(storage) == {"hot": [1, 3]}

    repaired = storage.scrubber().verify(location="hot", repair=True)
    assert repaired["repaired"] == [f"{checksum}@hot"]
    assert damage(storage) == {}
    rebuilt = b"".join(piece(hot, checksum, i).read_bytes() for i in range(4))
    assert rebuilt == data
    assert storage.scrubber().verify()["copies_bad"] == []


def test_a_copy_with_no_good_twin_is_unrepairable(storage, two_copies):
    checksum, _data, hot, cold = two_copies
    piece(hot, checksum, 0).write_bytes(b"x")
    piece(cold, checksum, 0).write_bytes(b"y")
    report = storage.scrubber().verify(repair=True)
    assert sorted(report["unrepairable"]) == [f"{checksum}@cold", f"{checksum}@hot"]
    assert damage(storage) == {"cold": [0], "hot": [0]}


def test_two_copies_damaged_in_different_pieces_repair_each_other(storage, two_copies):
    checksum, data, hot, cold = two_copies
    piece(hot, checksum, 0).write_bytes(b"x")
    piece(cold, checksum, 2).unlink()
    report = storage.scrubber().verify(repair=True)
    assert report["unrepairable"] == []
    assert sorted(report["repaired"]) == [f"{checksum}@cold", f"{checksum}@hot"]
    for root in (hot, cold):
        assert b"".join(piece(root, checksum, i).read_bytes() for i in range(4)) == data
    assert damage(storage) == {}
    assert storage.scrubber().verify()["copies_ok"] == 2


def test_a_copy_marked_corrupt_before_per_piece_tracking_serves_again_once_verified(storage, two_copies):
    checksum, _data, hot, _cold = two_copies
    with storage.session_factory()() as session, session.begin():
        session.execute(update(FileCopy).values(state=CopyState.CORRUPT))
    piece(hot, checksum, 1).write_bytes(b"x")
    storage.scrubber().verify()
    assert states(storage) == {"hot": CopyState.STORED, "cold": CopyState.STORED}
    assert damage(storage) == {"hot": [1]}


def test_an_unreachable_location_is_reported_not_condemned(storage, two_copies):
    _checksum, _data, hot, _cold = two_copies
    shutil.rmtree(hot)
    report = storage.scrubber().verify()
    assert len(report["unreachable"]) == 1 and report["copies_bad"] == []
    assert states(storage)["hot"] == CopyState.STORED


def test_verify_command_exit_status(storage, two_copies, monkeypatch, capsys):
    from storage_core import cli

    checksum, _data, hot, _cold = two_copies
    piece(hot, checksum, 2).write_bytes(b"broken")
    monkeypatch.setattr(cli, "build_container", lambda *_args: storage)
    assert cli.main(["verify"]) == 1
    assert cli.main(["verify", "--repair"]) == 0
    assert cli.main(["verify"]) == 0
    assert '"copies_ok": 2' in capsys.readouterr().out


def test_reads_without_verification_serve_what_the_location_has(client, container, storage, two_copies):
    """STORAGE_VERIFY_READS=0 trusts the location: documented, and measured in docs/benchmarks.md."""
    checksum, data, hot, _cold = two_copies
    assert client.get("/api/v1/buckets/bucket/objects/k").data == data
    container.download_service().verify_reads = False
    damaged = bytearray(piece(hot, checksum, 0).read_bytes())
    damaged[0] ^= 1
    piece(hot, checksum, 0).write_bytes(bytes(damaged))
    assert client.get("/api/v1/buckets/bucket/objects/k").data[:1] == bytes(damaged[:1])
