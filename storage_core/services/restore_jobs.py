"""Restore jobs: taken by workers, restored at the nearline location, copied into the cache, announced.

A worker takes one due job (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite every transaction begins with
``BEGIN IMMEDIATE``, which serialises the takers just as well) and holds it by a lease that it renews (a
heartbeat). Every change the worker makes to the job is conditional on still holding that lease, so a worker
that lost it (it hung past the lease and another took over) changes nothing. A worker that dies leaves a
lease that expires; the next taker carries on from the job's state: the room reserved in the cache is the
job's (``cache_copy_id``), restores under way at the location are not started again (the capability's
``status`` says so), and pieces already copied are written again (atomically, with the same bytes).

The steps of a job:

1. room in the cache, evicting if needed (``RestoreCache.reserve``); none: the job waits ``queued`` and tries
   again a few polls later;
2. restores started at the nearline location for the pieces that need one;
3. while they run, the job is held (and its lease renewed) if they end within ``HOLD_SECONDS``, else it is
   released and taken again when it is time to ask (``RestoreCapability.check_every_seconds``);
4. the pieces copied into the cache, each block verified against its recorded digest;
5. in one transaction, the copy becomes ``cached`` with its expiry, the job ``done``, and a
   ``file.available`` event is recorded.

A location error is retried with a doubling backoff (``STORAGE_RESTORE_RETRY_SECONDS``); after
``STORAGE_RESTORE_MAX_ATTEMPTS`` the job fails, its room is given back and ``file.restore_failed`` recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import StorageError
from storage_core.layout import FileLayout
from storage_core.metrics import RESTORE_SECONDS, RESTORE_TAKEOVERS, RESTORES
from storage_core.models import Access, CopyState, File, FileCopy, JobState, RestoreJob, StorageLocation
from storage_core.plugin import RestoreStatus
from storage_core.services.cache import CacheTooSmall, Reservation, RestoreCache
from storage_core.services.content import IterStream
from storage_core.services.events import FILE_AVAILABLE, FILE_RESTORE_FAILED, EventOutbox, backoff
from storage_core.services.reader import VerifiedReader
from storage_core.services.sources import PluginCache, Source, serving_order
from storage_core.settings import Settings
from storage_core.timeutil import as_utc, now_us

log = logging.getLogger(__name__)

# a restore that ends within this is waited for with the job held; a longer one is polled later
HOLD_SECONDS = 30.0
# a job waiting for cache room tries again after this many polls
ROOM_RETRY_POLLS = 5
# the nearline copy needs to stay readable only while it is copied into the cache
RESTORE_DAYS = 1


class LeaseLost(Exception):
    """Another worker holds the job now: this one must change nothing more."""


class Stopping(Exception):
    """The process is shutting down: the job is handed back at once."""


class Permanent(Exception):
    """A failure that waiting cannot mend."""


@dataclass(frozen=True, slots=True)
class _Job:
    id: int
    checksum: str
    state: str
    hours: int
    requested_at: dt.datetime
    cache_copy_id: int | None
    attempts: int


@profile("storage")
class RestoreWorker:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache, cache: RestoreCache,
                 events: EventOutbox, settings: Settings, clock: Callable[[], int] = now_us):
        self.session_factory = session_factory
        self.plugins = plugins
        self.cache = cache
        self.events = events
        self.lease = dt.timedelta(seconds=settings.restore_lease_seconds)
        self.retry_seconds = settings.restore_retry_seconds
        self.max_attempts = settings.restore_max_attempts
        self.room_retry = dt.timedelta(seconds=ROOM_RETRY_POLLS * settings.restore_poll_seconds)
        self.clock = clock

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock() / 1e6, dt.UTC)

    # ---- the loop's entry ------------------------------------------------------------------------------

    def run_once(self, owner: str, stop: threading.Event | None = None) -> bool:
        """Take one due job and carry it as far as it goes now; False when no job is due."""
        job = self._take(owner)
        if job is None:
            return False
        try:
            self._work(job, owner, stop)
        except LeaseLost:
            log.warning("restore job %d of %s: lease lost to another worker; leaving it", job.id, job.checksum)
        except Stopping:
            self._update(job, owner, next_attempt_at=self._now())
        except (Permanent, CacheTooSmall) as exc:
            self._fail(job, owner, str(exc))
        except StorageError as exc:
            self._retry(job, owner, f"{exc.code}: {exc.detail}")
        except Exception as exc:
            log.exception("restore job %d of %s failed unexpectedly", job.id, job.checksum)
            self._retry(job, owner, f"{type(exc).__name__}: {exc}")
        return True

    def _take(self, owner: str) -> _Job | None:
        now = self._now()
        with transaction(self.session_factory) as session:
            job = session.scalar(
                select(RestoreJob).where(RestoreJob.state.in_(JobState.ACTIVE), RestoreJob.next_attempt_at <= now,
                                         or_(RestoreJob.lease_expires_at.is_(None), RestoreJob.lease_expires_at < now))
                .order_by(RestoreJob.next_attempt_at, RestoreJob.id).limit(1).with_for_update(skip_locked=True))
            if job is None:
                return None
            if job.lease_owner is not None:
                RESTORE_TAKEOVERS.inc()
                log.warning("restore job %d of %s: taking over from %s, whose lease expired", job.id,
                            job.checksum, job.lease_owner)
            job.lease_owner, job.lease_expires_at = owner, now + self.lease
            return _Job(job.id, job.checksum, job.state, job.hours, as_utc(job.requested_at), job.cache_copy_id,
                        job.attempts)

    # ---- the steps -------------------------------------------------------------------------------------

    def _work(self, job: _Job, owner: str, stop: threading.Event | None) -> None:
        with transaction(self.session_factory) as session:
            file = session.get(File, job.checksum)
            if file is None:  # the file is gone (its job row with it, normally)
                session.execute(update(RestoreJob).where(RestoreJob.id == job.id)
                                .values(state=JobState.DONE, lease_owner=None, lease_expires_at=None))
                return
            layout = FileLayout.of(file)
            sources = [self.plugins.source(copy_id, location) for copy_id, location in session.execute(
                select(FileCopy.id, StorageLocation).join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                .where(FileCopy.checksum == job.checksum, FileCopy.state == CopyState.STORED,
                       StorageLocation.enabled.is_(True), StorageLocation.access == Access.NEARLINE)
                .order_by(*serving_order())).all()]
            reservation = self._reservation_of(session, job)
        if not sources:
            raise Permanent("no enabled nearline location holds a stored copy of the file")

        if reservation is None:
            reservation = self.cache.reserve(job.checksum, layout.size, owner=f"restore-{job.id}")
            if reservation is None:
                self._update(job, owner, state=JobState.QUEUED, next_attempt_at=self._now() + self.room_retry,
                             waiting_since=self._waiting_since(job))
                log.info("restore job %d of %s waits for room in the cache", job.id, job.checksum)
                return
            self._update(job, owner, cache_copy_id=reservation.copy_id, waiting_since=None, release=False)
        if reservation.cached:  # a copy was cached already (by hand, or a job before this one)
            self._finish(job, owner, reservation)
            return

        source = sources[0]
        if not self._restored(job, owner, source, layout, stop):
            return
        self._copy(job, owner, source, layout, reservation)
        self._finish(job, owner, reservation)

    def _reservation_of(self, session: Session, job: _Job) -> Reservation | None:
        if job.cache_copy_id is None:
            return None
        copy = session.get(FileCopy, job.cache_copy_id)
        if copy is None or copy.state not in (CopyState.PENDING, CopyState.CACHED):
            return None
        return Reservation(copy.id, copy.location, cached=copy.state == CopyState.CACHED)

    def _waiting_since(self, job: _Job) -> dt.datetime:
        with transaction(self.session_factory) as session:
            since = session.scalar(select(RestoreJob.waiting_since).where(RestoreJob.id == job.id))
        return as_utc(since) if since is not None else self._now()

    def _restored(self, job: _Job, owner: str, source: Source, layout: FileLayout,
                  stop: threading.Event | None) -> bool:
        """Start the restores the pieces need and wait for them while they end soon; False when the job was
        released to be asked again later."""
        capability = source.plugin.restore_capability
        if capability is None:  # the location's configuration changed: its pieces are read directly now
            return True
        waiting = list(range(layout.piece_count))
        started = False
        while waiting:
            statuses = {index: capability.status(layout.checksum, index) for index in waiting}
            for index, status in statuses.items():
                if status.state == RestoreStatus.ARCHIVED:  # never asked, or its earlier restore expired
                    capability.start(layout.checksum, index, RESTORE_DAYS)
                    started = True
            if job.state != JobState.RUNNING:
                now = self._now()
                self._update(job, owner, state=JobState.RUNNING, started_at=now, release=False,
                             eta=now + dt.timedelta(seconds=capability.estimate_seconds))
                job = _Job(job.id, job.checksum, JobState.RUNNING, job.hours, job.requested_at,
                           job.cache_copy_id, job.attempts)
            if started:
                # ask again at once: a location may answer a restore at once (a restored copy kept)
                started = False
                statuses = {index: capability.status(layout.checksum, index) for index in waiting}
            waiting = [index for index in waiting if statuses[index].state != RestoreStatus.RESTORED]
            if not waiting:
                return True
            every = capability.check_every_seconds
            wait = min(max(statuses[i].ready_in if statuses[i].ready_in is not None else every for i in waiting),
                       every)
            if wait > HOLD_SECONDS:
                self._update(job, owner, next_attempt_at=self._now() + dt.timedelta(seconds=wait))
                return False
            self._hold(job, owner, wait, stop)
        return True

    def _hold(self, job: _Job, owner: str, seconds: float, stop: threading.Event | None) -> None:
        """Wait ``seconds`` holding the job: the lease is renewed on the way."""
        deadline = time.monotonic() + seconds
        beat = self.lease.total_seconds() / 3
        while (left := deadline - time.monotonic()) > 0:
            step = min(left, beat)
            if stop is not None:
                if stop.wait(step):
                    raise Stopping
            else:
                time.sleep(step)
            self._heartbeat(job, owner)

    def _copy(self, job: _Job, owner: str, source: Source, layout: FileLayout, reservation: Reservation) -> None:
        """The restored pieces into the cache copy, every block verified on the way."""
        target = self.plugins.plugin_for(reservation.location)
        reader = VerifiedReader(layout, [source])
        for index, start, length in layout.pieces():
            target.write_piece(layout.checksum, index, IterStream(reader.iter_range(start, start + length)), length)
            self._heartbeat(job, owner)

    def _finish(self, job: _Job, owner: str, reservation: Reservation) -> None:
        now = self._now()
        with transaction(self.session_factory) as session:
            held = session.execute(select(RestoreJob.lease_owner, RestoreJob.hours).where(RestoreJob.id == job.id)
                                   .with_for_update()).first()
            if held is None or held.lease_owner != owner:
                raise LeaseLost
            # the hours as they are now: a request may have asked for more since the job was taken
            until = now + dt.timedelta(hours=held.hours)
            copy = session.get(FileCopy, reservation.copy_id, with_for_update=True)
            if copy is None or copy.state not in (CopyState.PENDING, CopyState.CACHED):
                # the room was taken back meanwhile (an administrator removed the copy): start over
                session.execute(update(RestoreJob).where(RestoreJob.id == job.id)
                                .values(cache_copy_id=None, lease_owner=None, lease_expires_at=None))
                return
            if copy.state == CopyState.PENDING:
                copy.state, copy.owner, copy.expires_at, copy.last_read_at = CopyState.CACHED, None, until, now
            else:
                copy.expires_at = max(as_utc(copy.expires_at), until) if copy.expires_at else until
                until = copy.expires_at
            session.execute(update(RestoreJob).where(RestoreJob.id == job.id).values(
                state=JobState.DONE, finished_at=now, lease_owner=None, lease_expires_at=None, error=None,
                waiting_since=None))
            self.events.record(session, FILE_AVAILABLE, job.checksum, until)
        RESTORES.labels("done").inc()
        RESTORE_SECONDS.observe(max((now - job.requested_at).total_seconds(), 0.0))
        log.info("restore job %d: %s cached on %s until %s (%.1f s after the request)", job.id, job.checksum,
                 reservation.location.name, until.isoformat(), (now - job.requested_at).total_seconds())

    # ---- the job's row ---------------------------------------------------------------------------------

    def _update(self, job: _Job, owner: str, release: bool = True, **values: Any) -> None:
        """Change the job, if this worker still holds it; ``release`` hands it back."""
        if release:
            values.update(lease_owner=None, lease_expires_at=None)
        with transaction(self.session_factory) as session:
            changed = session.execute(update(RestoreJob).where(RestoreJob.id == job.id,
                                                               RestoreJob.lease_owner == owner)
                                      .values(**values)).rowcount
        if not changed:
            raise LeaseLost

    def _heartbeat(self, job: _Job, owner: str) -> None:
        self._update(job, owner, release=False, lease_expires_at=self._now() + self.lease)

    def _retry(self, job: _Job, owner: str, error: str) -> None:
        attempts = job.attempts + 1
        if attempts >= self.max_attempts:
            self._fail(job, owner, f"{error} (after {attempts} attempts)", attempts)
            return
        wait = backoff(self.retry_seconds, attempts)
        log.warning("restore job %d of %s: attempt %d failed (%s); next in %.1f s", job.id, job.checksum,
                    attempts, error, wait)
        with contextlib.suppress(LeaseLost):
            self._update(job, owner, attempts=attempts, error=error[:1000],
                         next_attempt_at=self._now() + dt.timedelta(seconds=wait))

    def _fail(self, job: _Job, owner: str, error: str, attempts: int | None = None) -> None:
        now = self._now()
        with transaction(self.session_factory) as session:
            row = session.scalar(select(RestoreJob).where(RestoreJob.id == job.id).with_for_update())
            if row is None or row.lease_owner != owner:
                return
            copy_id = row.cache_copy_id
            row.state, row.finished_at, row.error = JobState.FAILED, now, error[:1000]
            row.cache_copy_id, row.lease_owner, row.lease_expires_at, row.waiting_since = None, None, None, None
            if attempts is not None:
                row.attempts = attempts
            self.events.record(session, FILE_RESTORE_FAILED, job.checksum, None)
        RESTORES.labels("failed").inc()
        log.error("restore job %d of %s failed: %s", job.id, job.checksum, error)
        if copy_id is not None:
            self.cache.release_reservation(job.checksum, copy_id)
