"""Files by checksum: metadata with copies and references, copies between locations, availability."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.auth import Principal
from storage_core.db import transaction
from storage_core.errors import NotFound
from storage_core.models import Bucket, File, FileCopy, Object, StorageLocation
from storage_core.names import validate_checksum
from storage_core.services.content import ContentStore
from storage_core.services.locations import get_location
from storage_core.services.restore import FileState, RestoreService
from storage_core.services.sources import damaged_pieces, serving_order


def get_file(session: Session, checksum: str) -> File:
    file = session.get(File, validate_checksum(checksum))
    if file is None:
        raise NotFound(f"file {checksum} does not exist")
    return file


@profile("storage")
class FileService:
    def __init__(self, session_factory: sessionmaker[Session], content: ContentStore):
        self.session_factory = session_factory
        self.content = content

    def get(self, checksum: str) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            file = get_file(session, checksum)
            copies = session.execute(
                select(FileCopy, StorageLocation).join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                .where(FileCopy.checksum == checksum).order_by(*serving_order())
            ).all()
            damage = damaged_pieces(session, [copy.id for copy, _ in copies])
            references = session.execute(
                select(Bucket.name, Object.key).join(Bucket, Bucket.id == Object.bucket_id)
                .where(Object.checksum == checksum).order_by(Bucket.name, Object.key)
            ).all()
            return {
                "checksum": file.checksum,
                "size": file.size,
                "piece_size": file.piece_size,
                "piece_count": file.piece_count,
                "created_at": file.created_at,
                "copies": [{"location": loc.name, "tier": loc.tier, "priority": loc.priority, "state": copy.state,
                            "damaged_pieces": sorted(damage.get(copy.id, ())),
                            "access": loc.access, "purpose": loc.purpose, "expires_at": copy.expires_at}
                           for copy, loc in copies],
                "references": [{"bucket": b, "key": k} for b, k in references],
            }

    def add_copy(self, checksum: str, location_name: str) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            get_file(session, checksum)
            location = get_location(session, location_name)
        self.content.copy_to(checksum, location)
        return self.get(checksum)

    def remove_copy(self, checksum: str, location_name: str) -> None:
        with transaction(self.session_factory) as session:
            get_file(session, checksum)
            location = get_location(session, location_name)
        self.content.remove_copy(checksum, location)


class AvailabilityService:
    """Whether files can be downloaded now, from which tier, and how their restore stands (REGARDS availability)."""

    def __init__(self, restore: RestoreService):
        self.restore = restore

    def check(self, checksums: list[str], principal: Principal) -> list[FileState]:
        """Callers learn only of files they could read (``AccessPolicy.readable``): others are ``unknown``.
        Each state has the fields of ``AvailabilitySchema`` (checksum, available, tier, state, expires_at)."""
        return self.restore.states(checksums, principal)
