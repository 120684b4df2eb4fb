"""Where a file's bytes can be read from: the plugin of each location, its copies as sources, the serving order.

The serving order is defined here once and used by every query that lists copies: the download path's
resolving statement, copies, repairs and the file metadata. Online storage locations come first, hot
before cold; then cache locations (restored copies of nearline files); nearline locations last (they
cannot be read until restored). Within each, priority (0 first), the id breaking ties.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, select
from sqlalchemy.orm import Session

from storage_core.db import connection
from storage_core.errors import StorageUnavailable
from storage_core.models import Access, CopyState, DamagedPiece, FileCopy, Purpose, StorageLocation
from storage_core.plugin import LocationPlugin, PluginRegistry

# the ranks of serving_order
ONLINE_HOT, ONLINE_COLD, CACHE, NEARLINE = range(4)


def serving_rank(location: Any = StorageLocation) -> Any:
    """Which group of the serving order a location is in (``ONLINE_HOT`` ... ``NEARLINE``), as SQL."""
    return case((location.access == Access.NEARLINE, NEARLINE), (location.purpose == Purpose.CACHE, CACHE),
                (location.tier == "hot", ONLINE_HOT), else_=ONLINE_COLD)


def serving_order(location: Any = StorageLocation) -> tuple[Any, ...]:
    """ORDER BY terms over a location (the ORM class or its table's columns ``.c``) in serving order."""
    return (serving_rank(location), location.priority, location.id)


def streamable(location: Any = StorageLocation) -> Any:
    """The locations whose copies can be read directly (not nearline), as SQL."""
    return location.access == Access.ONLINE


@dataclass(frozen=True, slots=True)
class Source:
    """One copy of a file, as a candidate to read from. ``cached``: a restored copy on a cache location,
    which a download leases so that it is not evicted while read."""

    copy_id: int
    location_id: int
    location: str
    tier: str
    plugin: LocationPlugin
    damaged: frozenset[int] = frozenset()  # pieces known to be missing or corrupt on this copy
    cached: bool = False


class PluginCache:
    """One plugin instance per location configuration, shared by the threads/greenlets of a process."""

    def __init__(self, registry: PluginRegistry):
        self.registry = registry
        self._instances: dict[int, tuple[str, LocationPlugin]] = {}
        self._by_version: dict[int, tuple[object, LocationPlugin]] = {}
        self._loading: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _fingerprint(location: StorageLocation) -> str:
        raw = json.dumps([location.plugin, location.config], sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()

    def plugin_for(self, location: StorageLocation) -> LocationPlugin:
        fingerprint = self._fingerprint(location)
        cached = self._instances.get(location.id)
        if cached and cached[0] == fingerprint:
            return cached[1]
        with self._lock:
            cached = self._instances.get(location.id)
            if cached and cached[0] == fingerprint:
                return cached[1]
            instance = self.registry.get(location.plugin)(location.config)
            if cached:
                cached[1].close()
            self._instances[location.id] = (fingerprint, instance)
            return instance

    def plugin_for_id(self, engine: Engine, location_id: int, version: object) -> LocationPlugin:
        """The plugin of a location known by id and version (``updated_at``): no query unless it changed."""
        cached = self._by_version.get(location_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        # one load per location: the first downloads after a start (or a change) would each take a pooled
        # connection for the same row, hundreds at once with many clients
        with self._loading.setdefault(location_id, threading.Lock()):
            cached = self._by_version.get(location_id)
            if cached is not None and cached[0] == version:
                return cached[1]
            with connection(engine) as conn, Session(bind=conn) as session:
                location = session.get(StorageLocation, location_id)
            if location is None:
                raise StorageUnavailable(f"storage location {location_id} is gone")
            plugin = self.plugin_for(location)
            self._by_version[location_id] = (version, plugin)
            return plugin

    def source(self, copy_id: int, location: StorageLocation, damaged: frozenset[int] = frozenset()) -> Source:
        return Source(copy_id, location.id, location.name, location.tier, self.plugin_for(location), damaged,
                      location.purpose == Purpose.CACHE)

    def sources_of_rows(self, engine: Engine, rows: list[Any]) -> list[Source]:
        """The sources of resolving rows (``copy_id``, ``location_id``, ``location``, ``tier``, ``purpose``,
        ``location_version``, ``damaged``), without loading a location unless its configuration changed;
        the damaged pieces are read only for copies that have some."""
        damage = damaged_pieces(engine, [row.copy_id for row in rows if row.damaged])
        return [Source(row.copy_id, row.location_id, row.location, row.tier,
                       self.plugin_for_id(engine, row.location_id, row.location_version),
                       damage.get(row.copy_id, frozenset()), row.purpose == Purpose.CACHE) for row in rows]

    def servable_sources(self, session: Session, checksum: str, *, excluding: int | None = None) -> list[Source]:
        """The copies of a file that can serve now (not nearline ones), in serving order (``excluding`` one
        copy id)."""
        rows = session.execute(
            select(FileCopy.id, StorageLocation)
            .join(StorageLocation, StorageLocation.id == FileCopy.location_id)
            .where(FileCopy.checksum == checksum, FileCopy.state.in_(CopyState.SERVABLE),
                   StorageLocation.enabled.is_(True), streamable())
            .order_by(*serving_order())
        ).all()
        damage = damaged_pieces(session, [copy_id for copy_id, _ in rows])
        return [self.source(copy_id, location, damage.get(copy_id, frozenset()))
                for copy_id, location in rows if copy_id != excluding]


def damaged_pieces(conn: Engine | Session, copy_ids: list[int]) -> dict[int, frozenset[int]]:
    """The damaged pieces of each of these copies (only those that have some appear)."""
    if not copy_ids:
        return {}
    query = select(DamagedPiece.copy_id, DamagedPiece.piece_index).where(DamagedPiece.copy_id.in_(copy_ids))
    if isinstance(conn, Engine):
        with connection(conn) as c:
            rows = c.execute(query).all()
    else:
        rows = conn.execute(query).all()
    found: dict[int, set[int]] = {}
    for copy_id, piece in rows:
        found.setdefault(copy_id, set()).add(piece)
    return {copy_id: frozenset(pieces) for copy_id, pieces in found.items()}
