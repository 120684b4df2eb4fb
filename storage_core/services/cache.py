"""The restore cache: room for restored copies on cache locations, eviction, and the leases of downloads reading them.

A cache location (``purpose = cache``) holds ``cached`` copies of nearline files, each with an expiry. Room for
a restore is reserved as a ``pending`` copy before anything is restored, so a location's capacity is never
exceeded: usage counts every copy that is not being deleted (``locations.usage``), and reservations on one
location are serialised by a lock of its row. When a restore needs room, expired copies are evicted first
(soonest expired first), then the least recently read; never a copy that a download is reading.

A download reading a cached copy holds a lease on it (``cache_leases``), taken in a transaction that first
updates the copy's ``last_read_at`` under the copy's row lock, and an eviction locks the copy rows
(``FOR UPDATE``) before it reads the leases in a later statement. So either the download's lease is committed
before the eviction looks (and the copy is kept), or the eviction marked the copy ``deleting`` first (and the
download does not get it, and answers as for an uncached file). Leases are renewed while the body streams and
deleted when it closes; a crashed instance's leases stop counting when they expire.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage_core.db import transaction
from storage_core.metrics import CACHE_EVICTIONS
from storage_core.models import (
    CacheLease,
    CopyState,
    DamagedPiece,
    File,
    FileCopy,
    JobState,
    Purpose,
    RestoreJob,
    StorageLocation,
)
from storage_core.services.content import ContentStore
from storage_core.services.locations import get_location, usage
from storage_core.services.sources import serving_order
from storage_core.timeutil import as_utc, now_us

log = logging.getLogger(__name__)


class CacheTooSmall(Exception):
    """The file is larger than every cache location: waiting would not help."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room for one restored copy: the pending copy that will hold it (or the copy already cached there)."""

    copy_id: int
    location: StorageLocation
    cached: bool = False  # the file is already cached on this location; nothing to restore


@dataclass(frozen=True, slots=True)
class _Victim:
    copy_id: int
    checksum: str
    size: int
    expired: bool


def _datetime(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)


class RestoreCache:
    def __init__(self, session_factory: sessionmaker[Session], content: ContentStore, lease_seconds: int,
                 clock: Callable[[], int] = now_us):
        self.session_factory = session_factory
        self.content = content
        self.lease_us = lease_seconds * 1_000_000
        self.clock = clock

    @property
    def renew_every_seconds(self) -> float:
        return self.lease_us / 3_000_000

    # ---- leases of downloads ---------------------------------------------------------------------------

    def lease(self, copy_ids: list[int]) -> dict[int, int]:
        """Lease the cached copies a download may read: ``{copy_id: lease_id}`` of those still cached (an
        evicted one is left out). Their ``last_read_at`` becomes now."""
        now = self.clock()
        leases: dict[int, int] = {}
        with transaction(self.session_factory) as session:
            for copy_id in sorted(copy_ids):
                # the row lock of this UPDATE is what an eviction waits for (module docstring)
                kept = session.execute(
                    update(FileCopy).where(FileCopy.id == copy_id, FileCopy.state == CopyState.CACHED)
                    .values(last_read_at=_datetime(now)).execution_options(synchronize_session=False)).rowcount
                if kept:
                    leases[copy_id] = session.execute(
                        insert(CacheLease).values(copy_id=copy_id, acquired_us=now, expires_us=now + self.lease_us)
                        .returning(CacheLease.id)).scalar_one()
        return leases

    def renew(self, lease_ids: list[int]) -> None:
        if lease_ids:
            with transaction(self.session_factory) as session:
                session.execute(update(CacheLease).where(CacheLease.id.in_(lease_ids))
                                .values(expires_us=self.clock() + self.lease_us))

    def release(self, lease_ids: list[int]) -> None:
        if lease_ids:
            with transaction(self.session_factory) as session:
                session.execute(delete(CacheLease).where(CacheLease.id.in_(lease_ids)))

    def is_leased(self, session: Session, copy_id: int) -> bool:
        """Whether a download is reading the copy (call after locking the copy's row)."""
        return bool(session.scalar(select(func.count()).select_from(CacheLease).where(
            CacheLease.copy_id == copy_id, CacheLease.expires_us > self.clock())))

    def forget_expired_leases(self) -> int:
        """Leases of downloads whose instance died (called by gc)."""
        with transaction(self.session_factory) as session:
            return session.execute(delete(CacheLease).where(CacheLease.expires_us <= self.clock())).rowcount

    # ---- room for a restore ----------------------------------------------------------------------------

    def reserve(self, checksum: str, size: int, owner: str) -> Reservation | None:
        """Room for a restored copy of ``checksum`` on the first cache location (in serving order) that has it
        or can make it by eviction; None when none can now (the restore waits, ``queued``).

        ``owner`` names the restore job; its own pending copy from an earlier attempt is found again.
        Raises ``CacheTooSmall`` when the file is larger than every cache location."""
        evicted: list[tuple[_Victim, StorageLocation]] = []
        reservation = None
        with transaction(self.session_factory) as session:
            caches = list(session.scalars(select(StorageLocation).where(
                StorageLocation.purpose == Purpose.CACHE, StorageLocation.enabled.is_(True))
                .order_by(*serving_order())))
            if caches and all(loc.capacity is not None and loc.capacity < size for loc in caches):
                raise CacheTooSmall(f"{size} bytes do not fit in any cache location "
                                    f"(largest: {max(loc.capacity or 0 for loc in caches)} bytes)")
            existing = {c.location_id: c for c in session.scalars(
                select(FileCopy).where(FileCopy.checksum == checksum,
                                       FileCopy.location_id.in_([loc.id for loc in caches])))}
            now = self.clock()
            for location in caches:
                copy = existing.get(location.id)
                if copy is not None:
                    if copy.state == CopyState.CACHED and session.scalar(
                            select(func.count()).select_from(DamagedPiece).where(DamagedPiece.copy_id == copy.id)):
                        # damaged: its room is this restore's, and every piece is written again
                        session.execute(delete(DamagedPiece).where(DamagedPiece.copy_id == copy.id))
                        copy.state, copy.owner, copy.expires_at = CopyState.PENDING, owner, None
                        reservation = Reservation(copy.id, location)
                        break
                    if copy.state == CopyState.CACHED:
                        reservation = Reservation(copy.id, location, cached=True)
                        break
                    if copy.state == CopyState.PENDING and copy.owner == owner:
                        reservation = Reservation(copy.id, location)
                        break
                    continue  # being removed, or damaged: another location, or later
                if location.capacity is not None and size > location.capacity:
                    continue
                # reservations on one location one at a time: the usage read below stays true until commit
                session.execute(select(StorageLocation.id).where(StorageLocation.id == location.id)
                                .with_for_update())
                used = usage(session, [location.id]).get(location.id, (0, 0))[0]
                need = used + size - location.capacity if location.capacity is not None else 0
                victims: list[_Victim] = []
                if need > 0:
                    found = self._victims(session, location, need, now)
                    if found is None:
                        continue
                    victims = found
                    session.execute(update(FileCopy).where(FileCopy.id.in_([v.copy_id for v in victims]))
                                    .values(state=CopyState.DELETING).execution_options(synchronize_session=False))
                copy = FileCopy(checksum=checksum, location_id=location.id, state=CopyState.PENDING, owner=owner)
                session.add(copy)
                session.flush()
                reservation = Reservation(copy.id, location)
                evicted = [(v, location) for v in victims]
                break
        # committed: the victims are no longer served; their pieces go before the new copy's are written
        for victim, location in evicted:
            log.info("cache %s: evicting %s (%s) for %s", location.name, victim.checksum,
                     "expired" if victim.expired else "least recently read", checksum)
            CACHE_EVICTIONS.labels("expired" if victim.expired else "lru").inc()
            self.content.remove_marked(victim.checksum, [(victim.copy_id, location)])
        return reservation

    def _victims(self, session: Session, location: StorageLocation, need: int, now: int) -> list[_Victim] | None:
        """Cached copies of the location whose eviction frees ``need`` bytes: expired first, then least recently
        read, none being read; None if that is not enough. Their rows stay locked until the caller commits."""
        rows = session.execute(
            select(FileCopy.id, FileCopy.checksum, File.size, FileCopy.expires_at, FileCopy.last_read_at,
                   FileCopy.created_at)
            .join(File, File.checksum == FileCopy.checksum)
            .where(FileCopy.location_id == location.id, FileCopy.state == CopyState.CACHED)
            .order_by(FileCopy.id)
            .with_for_update(of=FileCopy)).all()
        if not rows:
            return None
        # a new statement after the locks: it sees every lease committed before them
        leased = set(session.scalars(select(CacheLease.copy_id).where(
            CacheLease.copy_id.in_([r.id for r in rows]), CacheLease.expires_us > now)))
        moment = _datetime(now)

        def expired(row: Any) -> bool:
            return row.expires_at is not None and as_utc(row.expires_at) <= moment

        def order(row: Any) -> tuple[int, dt.datetime, int]:
            if expired(row):
                return 0, as_utc(row.expires_at), row.id
            return 1, as_utc(row.last_read_at or row.created_at), row.id

        victims, freed = [], 0
        for row in sorted((r for r in rows if r.id not in leased), key=order):
            victims.append(_Victim(row.id, row.checksum, row.size, expired(row)))
            freed += row.size
            if freed >= need:
                return victims
        return None

    def release_reservation(self, checksum: str, copy_id: int) -> None:
        """Give back the room of a restore that failed: its pending copy and whatever pieces it wrote."""
        with transaction(self.session_factory) as session:
            copy = session.get(FileCopy, copy_id)
            if copy is None or copy.state != CopyState.PENDING:
                return
            location = copy.location
            copy.state = CopyState.DELETING
        self.content.remove_marked(checksum, [(copy_id, location)])

    # ---- expiry, purge, status -------------------------------------------------------------------------

    def purge(self, everything: bool = False, location: str | None = None) -> dict[str, Any]:
        """Remove expired cached copies (``everything``: every cached copy) that no download is reading."""
        now = self.clock()
        with transaction(self.session_factory) as session:
            query = (select(FileCopy.id, FileCopy.checksum, File.size, StorageLocation)
                     .join(File, File.checksum == FileCopy.checksum)
                     .join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                     .where(FileCopy.state == CopyState.CACHED)
                     .order_by(FileCopy.id).with_for_update(of=FileCopy))
            if location is not None:
                query = query.where(StorageLocation.id == get_location(session, location).id)
            if not everything:
                query = query.where(FileCopy.expires_at <= _datetime(now))
            rows = session.execute(query).all()
            leased = set(session.scalars(select(CacheLease.copy_id).where(
                CacheLease.copy_id.in_([r.id for r in rows]), CacheLease.expires_us > now))) if rows else set()
            doomed = [r for r in rows if r.id not in leased]
            if doomed:
                session.execute(update(FileCopy).where(FileCopy.id.in_([r.id for r in doomed]))
                                .values(state=CopyState.DELETING).execution_options(synchronize_session=False))
        for row in doomed:
            CACHE_EVICTIONS.labels("purge" if everything else "expired").inc()
            self.content.remove_marked(row.checksum, [(row.id, row[3])])
        return {"removed": len(doomed), "removed_bytes": sum(r.size for r in doomed),
                "kept_being_read": len(rows) - len(doomed)}

    def status(self) -> dict[str, Any]:
        """Each cache location's capacity and use, and the restores waiting for room."""
        now = self.clock()
        moment = _datetime(now)
        with transaction(self.session_factory) as session:
            caches = list(session.scalars(select(StorageLocation).where(StorageLocation.purpose == Purpose.CACHE)
                                          .order_by(*serving_order())))
            figures = usage(session, [loc.id for loc in caches]) if caches else {}
            rows = session.execute(
                select(FileCopy.location_id, FileCopy.state, FileCopy.expires_at, File.size,
                       select(func.count()).select_from(CacheLease)
                       .where(CacheLease.copy_id == FileCopy.id, CacheLease.expires_us > now)
                       .scalar_subquery().label("leases"))
                .join(File, File.checksum == FileCopy.checksum)
                .where(FileCopy.location_id.in_([loc.id for loc in caches]))).all() if caches else []
            waiting = session.scalar(select(func.count()).select_from(RestoreJob).where(
                RestoreJob.state == JobState.QUEUED, RestoreJob.waiting_since.is_not(None)))
        locations = []
        for loc in caches:
            mine = [r for r in rows if r.location_id == loc.id]
            cached = [r for r in mine if r.state == CopyState.CACHED]
            used, _count = figures.get(loc.id, (0, 0))
            locations.append({
                "location": loc.name, "enabled": loc.enabled, "capacity": loc.capacity, "used_size": used,
                "cached_files": len(cached), "cached_size": sum(r.size for r in cached),
                "expired_files": sum(1 for r in cached if r.expires_at is not None and as_utc(r.expires_at) <= moment),
                "files_being_read": sum(1 for r in cached if r.leases),
                "reserved_files": sum(1 for r in mine if r.state == CopyState.PENDING),
                "reserved_size": sum(r.size for r in mine if r.state == CopyState.PENDING),
            })
        return {"locations": locations, "restores_waiting_for_room": waiting}

