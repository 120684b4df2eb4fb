"""Content store: writes a file's pieces to locations, copies and removes copies, frees unreferenced files.

Every change of a file's copies happens under a lock of the file's row, so that an upload reusing a
stored copy and the removal of that copy can never interleave:

- a copy is ``pending`` while its pieces are written (never served, never removed by others);
- ``release`` removes a file only when no object refers to it and no copy is pending, first
  marking its copies ``deleting``, then removing the pieces, then the rows;
- a failed write removes its pending copy and the pieces it wrote.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage_core import offload
from storage_core.db import transaction
from storage_core.errors import Conflict, NotFound, StorageUnavailable
from storage_core.layout import FileLayout
from storage_core.models import CacheLease, CopyState, DamagedPiece, File, FileCopy, Object, StorageLocation, utcnow
from storage_core.plugin import LocationPlugin
from storage_core.services.locations import require_not_cache, require_room, usage
from storage_core.services.reader import VerifiedReader
from storage_core.services.sources import PluginCache, Source
from storage_core.spool import Spool
from storage_core.timeutil import now_us

log = logging.getLogger(__name__)


PIECE_WRITERS = 4  # pieces of one upload written at once on a plugin that allows it


def _write_piece(plugin: LocationPlugin, spool: Spool, name: str, index: int) -> None:
    with spool.piece_reader(index) as stream:
        plugin.write_piece(name, index, stream, spool.piece_length(index))


def write_pieces(plugin: LocationPlugin, spool: Spool, name: str, written: Callable[[int], None]) -> None:
    """Write every piece of the spool to the location as ``name``; ``written(index)`` once each is.

    A plugin that allows it (``writes_in_threads``) gets up to ``PIECE_WRITERS`` pieces at once on real
    threads: their fsyncs share journal commits, and the event loop serves other requests meanwhile.
    A failure waits for the pieces still being written (each written one is reported) and raises."""
    if not plugin.writes_in_threads:
        for index in range(spool.piece_count):
            _write_piece(plugin, spool, name, index)
            written(index)
        return
    running: list[tuple[int, offload.Pending]] = []
    try:
        for index in range(spool.piece_count):
            if len(running) >= PIECE_WRITERS:
                done, call = running.pop(0)
                offload.wait_all([call])
                written(done)
            running.append((index, offload.submit(_write_piece, plugin, spool, name, index)))
        while running:
            done, call = running.pop(0)
            offload.wait_all([call])
            written(done)
    except BaseException:
        for done, call in running:
            with contextlib.suppress(Exception):
                offload.wait_all([call])
                written(done)
        raise


class ContentBusy(Conflict):
    """Another request is writing or removing this content on a location: wait for it, then look again."""


@dataclass
class PendingWrite:
    copy_id: int
    location: StorageLocation


def record_damage(session: Session, copy_id: int, piece: int, reason: str) -> None:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(DamagedPiece).values(copy_id=copy_id, piece_index=piece, reason=reason,
                                                        detected_at=utcnow())
                    .on_conflict_do_update(index_elements=["copy_id", "piece_index"], set_={"reason": reason}))


def lock_file(session: Session, checksum: str) -> File | None:
    return session.scalar(select(File).where(File.checksum == checksum).with_for_update())


class ContentStore:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache):
        self.session_factory = session_factory
        self.plugins = plugins

    # ---- writing ---------------------------------------------------------------------------------

    def reserve(self, session: Session, spool: Spool, locations: list[StorageLocation],
                owner: str) -> list[PendingWrite]:
        """Make sure the file row exists and each target location has a copy or a pending one.

        Runs inside the caller's transaction; returns the copies whose pieces must be written.
        """
        file = lock_file(session, spool.sha256)
        if file is None:
            file = File(checksum=spool.sha256, size=spool.size, piece_size=spool.piece_size,
                        piece_count=spool.piece_count, block_size=spool.block_size,
                        block_digests=spool.block_digests, block_hash=spool.block_hash, md5=spool.md5)
            try:
                with session.begin_nested():
                    session.add(file)
            except IntegrityError:
                # another upload of the same content created it first: wait for its lock
                file = lock_file(session, spool.sha256)
                if file is None:  # pragma: no cover - it existed a moment ago
                    raise Conflict("content is being changed concurrently; retry") from None
        copies = {c.location_id: c for c in session.scalars(
            select(FileCopy).where(FileCopy.checksum == file.checksum))}
        pending: list[PendingWrite] = []
        needs_space = [loc for loc in locations if loc.id not in copies and loc.capacity is not None]
        used = usage(session, [loc.id for loc in needs_space]) if needs_space else {}
        # a stored copy with damaged pieces is written again: the upload brings every piece
        damaged = set(session.scalars(select(DamagedPiece.copy_id).where(
            DamagedPiece.copy_id.in_([c.id for c in copies.values()])))) if copies else set()
        for location in locations:
            copy = copies.get(location.id)
            if copy is not None and copy.state == CopyState.STORED and copy.id not in damaged:
                continue
            if copy is not None and copy.state in (CopyState.PENDING, CopyState.DELETING):
                doing = "written to" if copy.state == CopyState.PENDING else "removed from"
                raise ContentBusy(f"the same content is being {doing} location {location.name!r} by another request")
            if copy is None:
                require_room(session, location, file.size, used)
                copy = FileCopy(checksum=file.checksum, location_id=location.id, state=CopyState.PENDING)
                session.add(copy)
            copy.state = CopyState.PENDING
            copy.owner = owner
            session.flush()
            pending.append(PendingWrite(copy.id, location))
        return pending

    def write(self, spool: Spool, pending: list[PendingWrite]) -> None:
        """Write every piece to every pending location; on failure remove what this write created."""
        written: list[tuple[LocationPlugin, int]] = []
        try:
            for target in pending:
                plugin = self.plugins.plugin_for(target.location)
                write_pieces(plugin, spool, spool.sha256,
                             lambda index, plugin=plugin: written.append((plugin, index)))
        except Exception as exc:
            self.abandon(spool.sha256, pending, written)
            if isinstance(exc, StorageUnavailable):
                raise StorageUnavailable(f"could not write to location: {exc.detail}") from exc
            raise

    def abandon(self, checksum: str, pending: list[PendingWrite],
                written: Iterable[tuple[LocationPlugin, int]] = ()) -> None:
        """Undo a reservation: pieces first (so no row ever points at missing pieces), then rows."""
        for plugin, index in written:
            try:
                plugin.delete_piece(checksum, index)
            except Exception:  # gc removes it later; the original error matters more
                log.exception("could not remove piece %s.%d after a failed write", checksum, index)
        try:
            with transaction(self.session_factory) as session:
                lock_file(session, checksum)
                session.execute(delete(FileCopy).where(FileCopy.id.in_([p.copy_id for p in pending]),
                                                       FileCopy.state == CopyState.PENDING))
                self._drop_file_if_unused(session, checksum)
        except Exception:
            log.exception("could not remove pending copies of %s; gc will", checksum)

    @staticmethod
    def mark_stored(session: Session, pending: list[PendingWrite]) -> None:
        """Every piece of these copies was just written: they serve, whole."""
        if pending:
            ids = [p.copy_id for p in pending]
            session.execute(update(FileCopy).where(FileCopy.id.in_(ids)).values(state=CopyState.STORED, owner=None))
            session.execute(delete(DamagedPiece).where(DamagedPiece.copy_id.in_(ids)))

    @staticmethod
    def _drop_file_if_unused(session: Session, checksum: str) -> None:
        in_use = session.scalar(select(
            exists().where(FileCopy.checksum == checksum) | exists().where(Object.checksum == checksum)))
        if not in_use:
            session.execute(delete(File).where(File.checksum == checksum))

    # ---- reading ---------------------------------------------------------------------------------

    def reader(self, session: Session, file: File) -> VerifiedReader:
        return VerifiedReader(FileLayout.of(file), self.plugins.servable_sources(session, file.checksum),
                              self.note_failure)

    def note_failure(self, source: Source, piece: int, exc: StorageUnavailable) -> None:
        """A piece lost or corrupted on one copy is not asked of that copy again until it is repaired; the
        copy's other pieces still serve."""
        if exc.code in ("PieceMissing", "CorruptPiece"):
            try:
                with transaction(self.session_factory) as session:
                    record_damage(session, source.copy_id, piece, exc.code)
            except Exception:
                log.exception("could not record damage of piece %d of copy %d", piece, source.copy_id)

    # ---- copies ----------------------------------------------------------------------------------

    def copy_to(self, checksum: str, location: StorageLocation) -> None:
        """Copy a stored file to another location, verifying every block on the way."""
        require_not_cache(location, "the target of a copy (it holds restored copies only)")
        owner = uuid.uuid4().hex
        with transaction(self.session_factory) as session:
            file = lock_file(session, checksum)
            if file is None:
                raise StorageUnavailable(f"file {checksum} is gone")
            existing = session.scalar(select(FileCopy).where(FileCopy.checksum == checksum,
                                                             FileCopy.location_id == location.id))
            if existing is not None and existing.state != CopyState.CORRUPT:
                raise Conflict(f"file already has a {existing.state} copy on {location.name!r}")
            if existing is None:
                require_room(session, location, file.size)
            copy = existing or FileCopy(checksum=checksum, location_id=location.id)
            copy.state, copy.owner = CopyState.PENDING, owner
            session.add(copy)
            session.flush()
            pending = [PendingWrite(copy.id, location)]
            reader = self.reader(session, file)
            layout = FileLayout.of(file)
        target = self.plugins.plugin_for(location)
        written: list[tuple[LocationPlugin, int]] = []
        try:
            for index, start, length in layout.pieces():
                stream = IterStream(reader.iter_range(start, start + length))
                target.write_piece(checksum, index, stream, length)
                written.append((target, index))
        except Exception:
            self.abandon(checksum, pending, written)
            raise
        with transaction(self.session_factory) as session:
            lock_file(session, checksum)
            self.mark_stored(session, pending)

    def remove_copy(self, checksum: str, location: StorageLocation) -> None:
        with transaction(self.session_factory) as session:
            lock_file(session, checksum)
            copies = session.scalars(select(FileCopy).where(FileCopy.checksum == checksum)).all()
            target = next((c for c in copies if c.location_id == location.id), None)
            if target is None:
                raise NotFound(f"file {checksum} has no copy on {location.name!r}")
            others = [c for c in copies if c.id != target.id and c.state == CopyState.STORED]
            if target.state == CopyState.PENDING:
                raise Conflict(f"the copy on {location.name!r} is being written")
            if target.state == CopyState.CACHED:
                # the row lock first, then the leases (the protocol of services/cache.py)
                session.execute(select(FileCopy.id).where(FileCopy.id == target.id).with_for_update())
                if session.scalar(select(exists().where(CacheLease.copy_id == target.id,
                                                        CacheLease.expires_us > now_us()))):
                    raise Conflict(f"the cached copy on {location.name!r} is being read")
            if not others and target.state == CopyState.STORED:
                raise Conflict("this is the last stored copy of the file; delete the object instead")
            target.state = CopyState.DELETING
        self._remove_pieces_and_rows(checksum, [(target.id, location)])

    # ---- freeing ---------------------------------------------------------------------------------

    def release(self, checksum: str) -> bool:
        """Remove a file no object refers to any more; False when it is still in use."""
        with transaction(self.session_factory) as session:
            file = lock_file(session, checksum)
            if file is None:
                return True
            if session.scalar(select(exists().where(Object.checksum == checksum))):
                return False
            copies = session.scalars(select(FileCopy).where(FileCopy.checksum == checksum)).all()
            if any(c.state == CopyState.PENDING for c in copies):
                return False  # an upload is reusing it; that upload or gc decides later
            for copy in copies:
                copy.state = CopyState.DELETING
            targets = [(c.id, c.location) for c in copies]
        self._remove_pieces_and_rows(checksum, targets)
        return True

    def remove_marked(self, checksum: str, targets: list[tuple[int, StorageLocation]]) -> None:
        """Remove the pieces and rows of copies already marked ``deleting`` (an evicted cached copy, say)."""
        self._remove_pieces_and_rows(checksum, targets)

    def _remove_pieces_and_rows(self, checksum: str, targets: list[tuple[int, StorageLocation]]) -> None:
        with transaction(self.session_factory) as session:
            file = session.get(File, checksum)
            piece_count = file.piece_count if file else 0
        removed = []
        for copy_id, location in targets:
            try:
                plugin = self.plugins.plugin_for(location)
                for index in range(piece_count):
                    plugin.delete_piece(checksum, index)
                removed.append(copy_id)
            except StorageUnavailable as exc:
                # the copy stays 'deleting'; `storage-admin gc` finishes the job when the location is back
                log.warning("could not remove pieces of %s from %s: %s", checksum, location.name, exc.detail)
        with transaction(self.session_factory) as session:
            lock_file(session, checksum)
            if removed:
                session.execute(delete(FileCopy).where(FileCopy.id.in_(removed)))
            self._drop_file_if_unused(session, checksum)


class IterStream:
    """A read()-able view of an iterator of byte chunks, for plugins that consume a stream."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._buffer + b"".join(self._chunks)
            self._buffer = b""
            return data
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
