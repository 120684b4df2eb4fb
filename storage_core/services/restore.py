"""Restores of nearline files, for every door: asking for them, the state of a file, what S3 shows of it.

The state of a file, as the caller may know it (``AccessPolicy.readable``: a file the caller cannot read is
``unknown``, exactly like one that does not exist):

- ``available``: an online copy, or an unexpired cached copy (``expires_at``); a request extends the latter;
- ``restoring``: a restore job is queued or running;
- ``queued``: its restore job waits for room in the cache;
- ``nearline``: only nearline copies, and no restore asked for;
- ``unknown``: not stored (no servable copy at all), or not readable by the caller.

A request creates the file's restore job, or joins the one under way (one row per file: the file is restored
once however many ask); the workers (``restore_jobs.RestoreWorker``) do the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Engine, case, func, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import AccessPolicy, Principal
from storage_core.db import among, connection, transaction
from storage_core.errors import InvalidArgument, ObjectNotFound
from storage_core.models import (
    Access,
    Bucket,
    CopyState,
    File,
    FileCopy,
    JobState,
    Object,
    Purpose,
    RestoreJob,
    StorageLocation,
)
from storage_core.services.permissions import bucket_access
from storage_core.services.resolve import Target
from storage_core.services.sources import PluginCache, damaged_pieces, serving_order
from storage_core.settings import Settings
from storage_core.timeutil import as_utc, now_us

AVAILABLE, RESTORING, QUEUED, NEARLINE, UNKNOWN = "available", "restoring", "queued", "nearline", "unknown"
FILE_STATES = (AVAILABLE, RESTORING, QUEUED, NEARLINE, UNKNOWN)
MAX_HOURS = 720


class FileState(NamedTuple):
    """What a caller learns of a file: its state, the expiry of its cached copy, the tier it is served from,
    and (restoring, queued) the seconds to wait before trying to read it. A named tuple, not a frozen
    dataclass: an availability call makes one per file, up to 1,000, and a frozen dataclass takes 1.5 µs
    to build (each field set through object.__setattr__), a tuple a fifth of that."""

    checksum: str
    state: str
    expires_at: dt.datetime | None = None
    tier: str | None = None
    retry_after: int | None = None

    @property
    def available(self) -> bool:
        return self.state == AVAILABLE

    def view(self) -> dict[str, Any]:
        return {"checksum": self.checksum, "state": self.state, "expires_at": self.expires_at}


@dataclass(frozen=True, slots=True)
class Residency:
    """What an S3 door's HeadObject and GetObject show of a file that has nearline copies and no online one:
    ``x-amz-storage-class`` (``storage_class``) and ``x-amz-restore`` (``state``: ``restoring`` or ``queued``
    is ``ongoing-request="true"``; ``available`` is ``ongoing-request="false", expiry-date=<expires_at>``;
    ``nearline`` has no header)."""

    storage_class: str
    state: str
    expires_at: dt.datetime | None = None


@dataclass(slots=True)
class _Copies:
    """The servable copies of one file, by kind."""

    online_tier: str | None = None  # the best tier of an online storage copy
    cached: list[tuple[int, dt.datetime | None, str]] = field(default_factory=list)  # (copy id, expires, tier)
    nearline: list[StorageLocation] = field(default_factory=list)


class Wakeup:
    """Wakes the restore loops of this process when a request creates jobs, so that a restore starts at once
    rather than at their next poll (loops of other processes find it at theirs)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        if self._event.wait(timeout):
            self._event.clear()


class RestoreService:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache, policy: AccessPolicy,
                 settings: Settings, clock: Callable[[], int] = now_us, wakeup: Wakeup | None = None,
                 autocommit_engine: Engine | None = None):
        self.session_factory = session_factory
        # states() reads without a transaction: one round trip instead of three (BEGIN, SELECT, COMMIT), and on
        # SQLite no write lock (every transaction there begins IMMEDIATE)
        self.autocommit_engine = autocommit_engine
        self.plugins = plugins
        self.policy = policy
        self.default_hours = settings.restore_hours
        self.poll_seconds = settings.restore_poll_seconds
        self.clock = clock
        self.wakeup = wakeup

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock() / 1e6, dt.UTC)

    # ---- for the doors ---------------------------------------------------------------------------------

    def states(self, checksums: list[str], principal: Principal) -> list[FileState]:
        """The state of each file (``unknown`` for what the caller cannot read), in the order asked."""
        with self._reading() as session:
            # the read check is part of the copies' query: one round trip for the common case
            found = self._states_in(session, set(checksums), readable_by=principal)
        return [found.get(c) or FileState(c, UNKNOWN) for c in checksums]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Session]:
        """A session for reads only: on an autocommit connection when there is an autocommit engine."""
        if self.autocommit_engine is None:
            with transaction(self.session_factory) as session:
                yield session
            return
        with connection(self.autocommit_engine) as conn, Session(bind=conn) as session:
            yield session

    def request(self, checksums: list[str], hours: int | None, principal: Principal) -> list[FileState]:
        """Restore each nearline file for ``hours`` (default ``STORAGE_RESTORE_HOURS``); extend the expiry of
        cached ones. What the caller cannot read is ``unknown`` and nothing is started for it."""
        hours = self._hours(hours)
        with transaction(self.session_factory) as session:
            readable = self._readable(session, checksums, principal)
            found = self._request_in(session, readable, hours)
        self._wake(found)
        return [found.get(c) or FileState(c, UNKNOWN) for c in checksums]

    def request_by_key(self, bucket: str, key: str, hours: int | None, principal: Principal) -> FileState:
        """``request`` for the object ``key`` of ``bucket`` (S3 RestoreObject): ``BucketNotFound`` /
        ``ObjectNotFound`` / the read check as a download would raise them."""
        hours = self._hours(hours)
        with transaction(self.session_factory) as session:
            found = bucket_access(session, bucket)
            self.policy.require_read(principal, found, key)
            checksum = session.scalar(select(Object.checksum).where(Object.bucket_id == found.id, Object.key == key))
            if checksum is None:
                raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket!r}")
            states = self._request_in(session, {checksum}, hours)
        self._wake(states)
        return states.get(checksum) or FileState(checksum, UNKNOWN)

    def request_for_read(self, target: Target, start: bool) -> FileState:
        """A download found only nearline copies of the target: restore it (``start``) or say how it stands.
        The read check was the download's."""
        checksum = target.file.checksum
        with transaction(self.session_factory) as session:
            if start:
                found = self._request_in(session, {checksum}, self.default_hours)
            else:
                found = self._states_in(session, {checksum})
        if start:
            self._wake(found)
        return found.get(checksum) or FileState(checksum, UNKNOWN)

    def _wake(self, states: dict[str, FileState]) -> None:
        if self.wakeup is not None and any(s.state in (RESTORING, QUEUED) for s in states.values()):
            self.wakeup.notify()

    def residency(self, target: Target) -> Residency | None:
        """What S3 shows of the target's storage class and restore; None when it has online storage copies (or
        no nearline one): STANDARD, no ``x-amz-restore``."""
        if not target.nearline or any(not source.cached for source in target.sources):
            return None
        capability = target.nearline[0].plugin.restore_capability
        storage_class = capability.storage_class if capability is not None else "GLACIER"
        if target.cache_expiry:
            return Residency(storage_class, AVAILABLE, max(target.cache_expiry.values()))
        with transaction(self.session_factory) as session:
            job = session.scalar(select(RestoreJob).where(RestoreJob.checksum == target.file.checksum,
                                                          RestoreJob.state.in_(JobState.ACTIVE)))
        if job is None:
            return Residency(storage_class, NEARLINE)
        return Residency(storage_class, QUEUED if job.waiting_since is not None else RESTORING)

    def storage_classes(self, checksums: Iterable[str]) -> dict[str, str]:
        """The S3 storage class of each file that has nearline copies and no online storage copy (S3 listings);
        files not in the answer are STANDARD."""
        wanted = set(checksums)
        if not wanted:
            return {}
        with transaction(self.session_factory) as session:
            copies = self._copies(session, wanted)
        classes = {}
        for checksum, found in copies.items():
            if found.online_tier is None and found.nearline:
                capability = self.plugins.plugin_for(found.nearline[0]).restore_capability
                classes[checksum] = capability.storage_class if capability is not None else "GLACIER"
        return classes

    # ---- administration --------------------------------------------------------------------------------

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Restore jobs, newest request first (``storage-admin restore list``)."""
        query = select(RestoreJob, File.size).join(File, File.checksum == RestoreJob.checksum)
        if state is not None:
            query = query.where(RestoreJob.state == state)
        with transaction(self.session_factory) as session:
            rows = session.execute(query.order_by(RestoreJob.requested_at.desc(), RestoreJob.id.desc())
                                   .limit(limit)).all()
        return [{"id": job.id, "checksum": job.checksum, "size": size, "state": job.state,
                 "waiting_for_room": job.waiting_since is not None, "hours": job.hours,
                 "requested_at": job.requested_at, "started_at": job.started_at, "finished_at": job.finished_at,
                 "next_attempt_at": job.next_attempt_at, "attempts": job.attempts, "eta": job.eta,
                 "worker": job.lease_owner, "lease_expires_at": job.lease_expires_at, "error": job.error}
                for job, size in rows]

    def job_counts(self) -> dict[str, int]:
        """How many restore jobs are in each state (metrics)."""
        with transaction(self.session_factory) as session:
            counts = dict(session.execute(select(RestoreJob.state, func.count()).group_by(RestoreJob.state)).all())
        return {state: int(counts.get(state, 0)) for state in JobState.ALL}

    # ---- inside a transaction --------------------------------------------------------------------------

    def _hours(self, hours: int | None) -> int:
        hours = self.default_hours if hours is None else hours
        if not 1 <= hours <= MAX_HOURS:
            raise InvalidArgument(f"hours must be between 1 and {MAX_HOURS}")
        return hours

    def _readable(self, session: Session, checksums: list[str], principal: Principal) -> set[str]:
        """The files among ``checksums`` that exist and the principal may read."""
        wanted = set(checksums)
        if not wanted:
            return set()
        if principal.is_admin:
            return set(session.scalars(select(File.checksum).where(File.checksum.in_(wanted))))
        return set(session.scalars(
            select(Object.checksum).join(Bucket, Bucket.id == Object.bucket_id)
            .where(Object.checksum.in_(wanted), self.policy.readable(principal, Bucket, Object.key)).distinct()))

    def _copies(self, session: Session, checksums: set[str], readable_by: Principal | None = None
                ) -> dict[str, _Copies]:
        """The servable copies of each of the files, in serving order; with ``readable_by``, of those files only
        that the principal may read (``_readable``'s rule: for an admin, a file with copies exists)."""
        L = StorageLocation
        query = (select(FileCopy.checksum, FileCopy.id, FileCopy.state, FileCopy.expires_at, L.id, L.access,
                        L.purpose, L.tier)
                 .join(L, L.id == FileCopy.location_id)
                 .where(among(session, FileCopy.checksum, checksums), FileCopy.state.in_(CopyState.SERVABLE),
                        L.enabled.is_(True)))
        if readable_by is not None and not readable_by.is_admin:
            query = query.where(select(Object.id).join(Bucket, Bucket.id == Object.bucket_id).where(
                Object.checksum == FileCopy.checksum, self.policy.readable(readable_by, Bucket, Object.key)).exists())
        # plain rows, not ORM entities: a thousand files are a thousand rows, and this runs per availability call
        rows = session.execute(query.order_by(*serving_order())).all()
        # a cached copy with damaged pieces counts as absent: it is restored again, not repaired
        damaged = set(damaged_pieces(session, [r[1] for r in rows if r[2] == CopyState.CACHED]))
        copies: dict[str, _Copies] = {}
        for checksum, copy_id, state, expires_at, location_id, access, purpose, tier in rows:
            found = copies.get(checksum)
            if found is None:
                found = copies[checksum] = _Copies()
            if access == Access.NEARLINE:
                found.nearline.append(session.get_one(StorageLocation, location_id))
            elif copy_id in damaged:
                continue
            elif state == CopyState.CACHED or purpose == Purpose.CACHE:
                found.cached.append((copy_id, as_utc(expires_at) if expires_at else None, tier))
            elif found.online_tier is None:  # serving order: the first is the best
                found.online_tier = tier
        return copies

    def _jobs(self, session: Session, checksums: set[str]) -> dict[str, RestoreJob]:
        if not checksums:
            return {}
        return {job.checksum: job for job in session.scalars(
            select(RestoreJob).where(among(session, RestoreJob.checksum, checksums)))}

    def _states_in(self, session: Session, checksums: set[str], readable_by: Principal | None = None
                   ) -> dict[str, FileState]:
        if not checksums:
            return {}
        copies = self._copies(session, checksums, readable_by)
        # a restore job matters only to a file served from nearline alone
        jobs = self._jobs(session, {c for c, found in copies.items() if found.online_tier is None and found.nearline})
        now = self._now()
        return {c: self._state(c, copies.get(c), jobs.get(c), now) for c in checksums}

    def _state(self, checksum: str, copies: _Copies | None, job: RestoreJob | None, now: dt.datetime) -> FileState:
        if copies is None:
            return FileState(checksum, UNKNOWN)
        if copies.online_tier is not None:
            return FileState(checksum, AVAILABLE, tier=copies.online_tier)
        live = [(expires, tier) for _id, expires, tier in copies.cached if expires is None or expires > now]
        if live:
            expires = max((e for e, _ in live if e is not None), default=None)
            return FileState(checksum, AVAILABLE, expires, tier=live[0][1])
        if not copies.nearline:
            return FileState(checksum, UNKNOWN)
        if job is None or job.state not in JobState.ACTIVE:
            return FileState(checksum, NEARLINE)
        if job.waiting_since is not None:
            # a waiting job tries again every few polls (restore_jobs.ROOM_RETRY_POLLS)
            return FileState(checksum, QUEUED, retry_after=max(1, math.ceil(5 * self.poll_seconds)))
        eta = as_utc(job.eta) if job.eta is not None else None
        wait = (eta - now).total_seconds() if eta is not None else 0.0
        return FileState(checksum, RESTORING, retry_after=max(1, math.ceil(max(wait, self.poll_seconds))))

    def _request_in(self, session: Session, checksums: set[str], hours: int) -> dict[str, FileState]:
        if not checksums:
            return {}
        now = self._now()
        until = now + dt.timedelta(hours=hours)
        copies = self._copies(session, checksums)
        results: dict[str, FileState] = {}
        restore: dict[str, _Copies] = {}
        for checksum in sorted(checksums):  # a stable order of row locks: no deadlock between requests
            found = copies.get(checksum)
            if found is None:
                results[checksum] = FileState(checksum, UNKNOWN)
            elif found.online_tier is not None:
                results[checksum] = FileState(checksum, AVAILABLE, tier=found.online_tier)
            elif extended := self._extend(session, found, until):
                results[checksum] = FileState(checksum, AVAILABLE, extended[0], tier=extended[1])
            elif found.nearline:
                restore[checksum] = found
            else:
                results[checksum] = FileState(checksum, UNKNOWN)
        if restore:
            self._upsert_jobs(session, restore, hours, now)
            jobs = self._jobs(session, set(restore))
            for checksum, found in restore.items():
                results[checksum] = self._state(checksum, found, jobs.get(checksum), now)
        return results

    @staticmethod
    def _extend(session: Session, copies: _Copies, until: dt.datetime) -> tuple[dt.datetime, str] | None:
        """Keep the cached copies (even expired ones still there) until at least ``until``: (expiry, tier) of
        one that is still cached, or None when none is (evicted meanwhile)."""
        for copy_id, expires_at, tier in copies.cached:
            kept = session.execute(
                update(FileCopy).where(FileCopy.id == copy_id, FileCopy.state == CopyState.CACHED)
                .values(expires_at=case((FileCopy.expires_at < until, until), else_=FileCopy.expires_at))
                .execution_options(synchronize_session=False)).rowcount
            if kept:
                return max(expires_at or until, until), tier
        return None

    def _upsert_jobs(self, session: Session, files: dict[str, _Copies], hours: int, now: dt.datetime) -> None:
        """Create each file's restore job, or join the one under way (the longer ``hours`` wins); a finished
        job (done, then evicted; or failed) starts again. One statement: ``INSERT ... ON CONFLICT``."""
        rows = []
        for checksum in sorted(files):
            capability = self.plugins.plugin_for(files[checksum].nearline[0]).restore_capability
            estimate = capability.estimate_seconds if capability is not None else 0.0
            rows.append({"checksum": checksum, "state": JobState.QUEUED, "hours": hours, "requested_at": now,
                         "next_attempt_at": now, "eta": now + dt.timedelta(seconds=estimate), "attempts": 0})
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        insert = dialect.insert(RestoreJob).values(rows)
        new, old = insert.excluded, RestoreJob.__table__.c
        finished = old.state.in_((JobState.DONE, JobState.FAILED))

        def restart(value: Any, keep: Any) -> Any:
            return case((finished, value), else_=keep)

        session.execute(insert.on_conflict_do_update(index_elements=[old.checksum], set_={
            "hours": case((finished, new.hours), (new.hours > old.hours, new.hours), else_=old.hours),
            "state": restart(JobState.QUEUED, old.state),
            "requested_at": restart(new.requested_at, old.requested_at),
            "next_attempt_at": restart(new.next_attempt_at, old.next_attempt_at),
            "eta": restart(new.eta, old.eta),
            "attempts": restart(0, old.attempts),
            "started_at": restart(null(), old.started_at),
            "finished_at": restart(null(), old.finished_at),
            "waiting_since": restart(null(), old.waiting_since),
            "cache_copy_id": restart(null(), old.cache_copy_id),
            "error": restart(null(), old.error),
        }))
