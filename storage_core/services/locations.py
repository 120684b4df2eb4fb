"""Storage locations: their management, what each holds, and whether a file fits in one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import Conflict, InsufficientStorage, InvalidArgument, NotFound
from storage_core.models import CopyState, File, FileCopy, StorageLocation
from storage_core.names import validate_location_name
from storage_core.plugin import PluginRegistry
from storage_core.services.sources import serving_order


def location_view(location: StorageLocation, registry: PluginRegistry, used_size: int = 0,
                  file_count: int = 0) -> dict[str, Any]:
    plugin_cls = registry.get(location.plugin)
    return {
        "name": location.name,
        "plugin": location.plugin,
        "tier": location.tier,
        "priority": location.priority,
        "enabled": location.enabled,
        "config": plugin_cls.public_config(location.config),
        "capacity": location.capacity,
        "used_size": used_size,
        "file_count": file_count,
        "created_at": location.created_at,
    }


def get_location(session: Session, name: str) -> StorageLocation:
    location = session.scalar(select(StorageLocation).where(StorageLocation.name == name))
    if location is None:
        raise NotFound(f"storage location {name!r} does not exist")
    return location


def usage(session: Session, location_ids: list[int] | None = None) -> dict[int, tuple[int, int]]:
    """(used bytes, file count) per location id, counting every copy that occupies space."""
    query = (
        select(FileCopy.location_id, func.coalesce(func.sum(File.size), 0), func.count())
        .join(File, File.checksum == FileCopy.checksum)
        .where(FileCopy.state != CopyState.DELETING)
        .group_by(FileCopy.location_id)
    )
    if location_ids is not None:
        query = query.where(FileCopy.location_id.in_(location_ids))
    return {row[0]: (int(row[1]), int(row[2])) for row in session.execute(query)}


def require_room(session: Session, location: StorageLocation, size: int,
                 used: dict[int, tuple[int, int]] | None = None) -> None:
    """``InsufficientStorage`` unless ``size`` more bytes fit within the location's capacity.

    ``used``: figures of ``usage`` already read in this transaction (one query for many locations)."""
    if location.capacity is None:
        return
    figures = used if used is not None else usage(session, [location.id])
    if figures.get(location.id, (0, 0))[0] + size > location.capacity:
        raise InsufficientStorage(f"location {location.name!r} has no room for {size} bytes")


@profile("storage")
class LocationService:
    def __init__(self, session_factory: sessionmaker[Session], registry: PluginRegistry):
        self.session_factory = session_factory
        self.registry = registry

    def _view(self, session: Session, location: StorageLocation) -> dict[str, Any]:
        used, count = usage(session, [location.id]).get(location.id, (0, 0))
        return location_view(location, self.registry, used, count)

    def list(self) -> list[dict[str, Any]]:
        with transaction(self.session_factory) as session:
            locations = session.scalars(select(StorageLocation).order_by(*serving_order())).all()
            figures = usage(session)
            return [location_view(loc, self.registry, *figures.get(loc.id, (0, 0))) for loc in locations]

    def get(self, name: str) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            return self._view(session, get_location(session, name))

    def create(self, data: dict[str, Any]) -> dict[str, Any]:
        validate_location_name(data["name"])
        plugin_cls = self.registry.get(data["plugin"])
        config = plugin_cls.validate_config(data["config"])
        try:
            with transaction(self.session_factory) as session:
                location = StorageLocation(
                    name=data["name"], plugin=data["plugin"], tier=data["tier"], priority=data["priority"],
                    enabled=data["enabled"], config=config, capacity=data.get("capacity"),
                )
                session.add(location)
                session.flush()
                return self._view(session, location)
        except IntegrityError:
            raise Conflict(f"storage location {data['name']!r} already exists") from None

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            location = get_location(session, name)
            if "config" in changes:
                plugin_cls = self.registry.get(location.plugin)
                # Merging keeps write-only secrets that the client cannot read back.
                location.config = plugin_cls.validate_config({**location.config, **changes.pop("config")})
            for field, value in changes.items():
                setattr(location, field, value)
            session.flush()
            return self._view(session, location)

    def delete(self, name: str) -> None:
        with transaction(self.session_factory) as session:
            location = get_location(session, name)
            copies = session.scalar(
                select(func.count()).select_from(FileCopy).where(FileCopy.location_id == location.id)
            )
            if copies:
                raise Conflict(f"storage location {name!r} still holds {copies} file(s)")
            session.execute(delete(StorageLocation).where(StorageLocation.id == location.id))


def validate_location_names(session: Session, names: list[str]) -> list[StorageLocation]:
    locations = session.scalars(select(StorageLocation).where(StorageLocation.name.in_(names))).all()
    missing = sorted(set(names) - {loc.name for loc in locations})
    if missing:
        raise InvalidArgument(f"unknown storage location(s): {', '.join(missing)}")
    return list(locations)
