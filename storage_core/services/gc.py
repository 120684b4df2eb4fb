"""Garbage collection: abandoned pending copies, unfinished deletions, unreferenced files, orphan pieces, and
the restore cache's leftovers (expired cached copies, leases of dead downloads, old restore jobs and events).

The pending copy that reserves cache room for a restore job stays pending for as long as the restore takes
(hours on Glacier): it is the job's, not an abandoned upload, while the job is queued or running.

Safe while uploads run: an upload commits its pending copy row (a multipart part its pending part row)
*before* writing any piece, so listing a location's pieces first and reading the rows afterwards can
never take a piece of a running upload for an orphan.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import StorageUnavailable
from storage_core.models import CopyState, File, FileCopy, JobState, Object, RestoreJob, StorageLocation
from storage_core.services.cache import RestoreCache
from storage_core.services.content import ContentStore, PendingWrite
from storage_core.services.events import EventOutbox
from storage_core.services.limits import DownloadLimits
from storage_core.services.multipart import MultipartService
from storage_core.services.sources import PluginCache

# finished restore jobs and delivered events are kept this long (restore list, debugging a receiver)
KEEP_FINISHED = dt.timedelta(days=7)

log = logging.getLogger(__name__)


@profile("storage")
class GarbageCollector:
    def __init__(self, session_factory: sessionmaker[Session], content: ContentStore,
                 plugins: PluginCache, spool_dir: Path, limits: DownloadLimits | None = None,
                 cache: RestoreCache | None = None, events: EventOutbox | None = None,
                 multipart: MultipartService | None = None, upload_expiry_hours: int = 24):
        self.session_factory = session_factory
        self.content = content
        self.plugins = plugins
        self.spool_dir = spool_dir
        self.limits = limits
        self.cache = cache
        self.events = events
        self.multipart = multipart
        self.upload_expiry_seconds = upload_expiry_hours * 3600

    def collect(self, pending_grace_seconds: int = 3600, dry_run: bool = False) -> dict[str, Any]:
        report: dict[str, Any] = {"abandoned_copies": 0, "files_released": 0, "orphan_pieces": 0,
                                  "spool_files": 0, "locations_skipped": []}
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=pending_grace_seconds)
        # bodies of uploads whose process died before it could remove them
        if self.spool_dir.is_dir():
            for path in self.spool_dir.iterdir():
                try:
                    stale = path.is_file() and path.stat().st_mtime < cutoff.timestamp()
                except FileNotFoundError:
                    continue  # its upload finished and removed it since the listing
                if stale:
                    report["spool_files"] += 1
                    if not dry_run:
                        path.unlink(missing_ok=True)
        if self.multipart is not None:
            # uploads idle past their expiry and parts whose writer died: before the pending copies, so
            # a Complete that died leaves its half-moved content to the step below
            report.update(self.multipart.collect(self.upload_expiry_seconds, pending_grace_seconds, dry_run))
        with transaction(self.session_factory) as session:
            stale = session.execute(
                select(FileCopy, File.piece_count).join(File, File.checksum == FileCopy.checksum)
                .where(FileCopy.state == CopyState.PENDING, FileCopy.updated_at < cutoff,
                       ~exists().where(RestoreJob.cache_copy_id == FileCopy.id,
                                       RestoreJob.state.in_(JobState.ACTIVE)))
            ).all()
            stale_rows = [(c.id, c.checksum, c.location, n) for c, n in stale]
        for copy_id, checksum, location, piece_count in stale_rows:
            report["abandoned_copies"] += 1
            if dry_run:
                continue
            plugin = self.plugins.plugin_for(location)
            written = [(plugin, index) for index in range(piece_count)]
            self.content.abandon(checksum, [PendingWrite(copy_id, location)], written)

        with transaction(self.session_factory) as session:
            unreferenced = session.scalars(
                select(File.checksum).where(
                    ~exists().where(Object.checksum == File.checksum),
                    ~exists().where(and_(FileCopy.checksum == File.checksum,
                                         FileCopy.state == CopyState.PENDING)),
                )
            ).all()
        for checksum in unreferenced:
            report["files_released"] += 1
            if not dry_run:
                self.content.release(checksum)

        with transaction(self.session_factory) as session:
            locations = list(session.scalars(select(StorageLocation).where(StorageLocation.enabled.is_(True))))
        for location in locations:
            plugin = self.plugins.plugin_for(location)
            try:
                if not dry_run:
                    report["partial_writes"] = report.get("partial_writes", 0) + plugin.remove_partial_writes(
                        cutoff.timestamp())
                listed = list(plugin.list_pieces())
            except (NotImplementedError, StorageUnavailable) as exc:
                report["locations_skipped"].append(f"{location.name}: {exc}")
                continue
            # read the rows only after listing: see the module docstring
            with transaction(self.session_factory) as session:
                known = dict(session.execute(
                    select(FileCopy.checksum, File.piece_count).join(File, File.checksum == FileCopy.checksum)
                    .where(FileCopy.location_id == location.id)
                ).all())
            parts = self.multipart.piece_names() if self.multipart is not None else set()
            for checksum, index in listed:
                if (checksum in known and index < known[checksum]) or checksum in parts:
                    continue
                report["orphan_pieces"] += 1
                if not dry_run:
                    plugin.delete_piece(checksum, index)
        if self.limits is not None and not dry_run:
            day_ago = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).timestamp() * 1_000_000)
            report["old_leases"] = self.limits.forget_old_leases(day_ago)
        if self.cache is not None and not dry_run:
            report["expired_cached_copies"] = self.cache.purge()["removed"]
            report["dead_cache_leases"] = self.cache.forget_expired_leases()
            old = dt.datetime.now(dt.UTC) - KEEP_FINISHED
            with transaction(self.session_factory) as session:
                report["finished_restore_jobs"] = session.execute(delete(RestoreJob).where(
                    RestoreJob.state.in_((JobState.DONE, JobState.FAILED)), RestoreJob.finished_at < old)).rowcount
            if self.events is not None:
                report["delivered_events"] = self.events.forget_delivered(old)
        log.info("gc: %s", report)
        return report
