"""Storage locations: their management, what each holds, and whether a file fits in one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import Conflict, InsufficientStorage, InvalidArgument, NotFound, StorageUnavailable
from storage_core.models import Access, CopyState, File, FileCopy, Purpose, StorageLocation
from storage_core.names import validate_location_name
from storage_core.plugin import LocationPlugin, PluginRegistry
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
        "access": location.access,
        "purpose": location.purpose,
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

    def _check_access(self, plugin: str, config: dict[str, Any], access: str, purpose: str) -> None:
        """A location's access must be what its plugin's configuration makes it: nearline exactly when the
        plugin reports a restore capability (a capability asked for, never a silent no-op)."""
        if access not in Access.ALL:
            raise InvalidArgument(f"access must be one of {', '.join(Access.ALL)}")
        if purpose not in Purpose.ALL:
            raise InvalidArgument(f"purpose must be one of {', '.join(Purpose.ALL)}")
        if purpose == Purpose.CACHE and access != Access.ONLINE:
            raise InvalidArgument("a cache location is online: its restored copies are read directly")
        restores = self.registry.get(plugin)(config).restore_capability is not None
        if access == Access.NEARLINE and not restores:
            raise InvalidArgument(
                f"a nearline location needs a plugin configured to restore ({plugin!r} is not): local with "
                "config.restore_seconds, or s3 with config.storage_class GLACIER or DEEP_ARCHIVE")
        if access == Access.ONLINE and restores:
            raise InvalidArgument(
                f"this {plugin} configuration makes a nearline location (its pieces must be restored before "
                "they are read): create it with access nearline")

    def prepare(self, name: str, plugin_cls: type[LocationPlugin], config: dict[str, Any]) -> None:
        """``InvalidArgument`` with the reason unless the location can serve (``LocationPlugin.prepare``)."""
        plugin = plugin_cls(config)
        try:
            plugin.prepare()
        except StorageUnavailable as exc:
            raise InvalidArgument(f"storage location {name!r} cannot be used: {exc.detail} "
                                  "(add it with check false to skip this check)") from None
        finally:
            plugin.close()

    def create(self, data: dict[str, Any], check: bool = True) -> dict[str, Any]:
        """Add a location; ``check``: prepare it first (a local root is made, an S3 bucket reached) and
        refuse it if it cannot serve. Without the check nothing is touched: it is added as it is."""
        validate_location_name(data["name"])
        plugin_cls = self.registry.get(data["plugin"])
        config = plugin_cls.validate_config(data["config"])
        access, purpose = data.get("access", Access.ONLINE), data.get("purpose", Purpose.STORAGE)
        self._check_access(data["plugin"], config, access, purpose)
        if check:
            with transaction(self.session_factory) as session:
                # before preparing, so that a duplicate name touches no disk and reaches no endpoint
                if session.scalar(select(StorageLocation.id).where(StorageLocation.name == data["name"])):
                    raise Conflict(f"storage location {data['name']!r} already exists")
            self.prepare(data["name"], plugin_cls, config)
        try:
            with transaction(self.session_factory) as session:
                location = StorageLocation(
                    name=data["name"], plugin=data["plugin"], tier=data["tier"], priority=data["priority"],
                    enabled=data["enabled"], config=config, capacity=data.get("capacity"),
                    access=access, purpose=purpose,
                )
                session.add(location)
                session.flush()
                return self._view(session, location)
        except IntegrityError:
            raise Conflict(f"storage location {data['name']!r} already exists") from None

    def update(self, name: str, changes: dict[str, Any], check: bool = True) -> dict[str, Any]:
        """Change a location; a new ``config`` is prepared and checked as at creation, unless ``check`` is off."""
        with transaction(self.session_factory) as session:
            location = get_location(session, name)
            if "config" in changes:
                plugin_cls = self.registry.get(location.plugin)
                # Merging keeps write-only secrets that the client cannot read back.
                config = plugin_cls.validate_config({**location.config, **changes.pop("config")})
                self._check_access(location.plugin, config, location.access, location.purpose)
                if check and config != location.config:
                    self.prepare(name, plugin_cls, config)
                location.config = config
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
    """The locations named as upload targets of a bucket: they exist and none is a cache."""
    locations = session.scalars(select(StorageLocation).where(StorageLocation.name.in_(names))).all()
    missing = sorted(set(names) - {loc.name for loc in locations})
    if missing:
        raise InvalidArgument(f"unknown storage location(s): {', '.join(missing)}")
    for location in locations:
        require_not_cache(location, "an upload target")
    return list(locations)


def require_not_cache(location: StorageLocation, what: str) -> None:
    """Cache locations hold only restored copies: never the target of an upload or a copy."""
    if location.purpose == Purpose.CACHE:
        raise InvalidArgument(f"location {location.name!r} is a cache location: it cannot be {what}")
