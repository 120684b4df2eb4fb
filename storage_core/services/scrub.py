"""Scrubbing: read every piece of every copy, record the damaged pieces, and repair them piece by piece.

Damage is tracked per piece of a copy (``DamagedPiece``): a copy with one bad piece still serves its
other pieces, and a bad piece is rebuilt from any copy whose same piece is good, so two copies damaged
in different pieces repair each other.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import CorruptPiece, PieceMissing, StorageUnavailable
from storage_core.layout import FileLayout
from storage_core.models import CopyState, DamagedPiece, File, FileCopy, StorageLocation
from storage_core.services.content import IterStream, lock_file, record_damage
from storage_core.services.reader import VerifiedReader
from storage_core.services.sources import PluginCache, Source, streamable

log = logging.getLogger(__name__)


@profile("storage")
class Scrubber:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache):
        self.session_factory = session_factory
        self.plugins = plugins

    def verify(self, location: str | None = None, repair: bool = False) -> dict[str, Any]:
        """Check every stored copy (of one location, or all), piece by piece; with ``repair``, rewrite each bad
        piece from a copy whose same piece is good."""
        report: dict[str, Any] = {"copies_checked": 0, "copies_ok": 0, "copies_bad": [], "repaired": [],
                                  "unrepairable": [], "unreachable": []}
        query = (select(FileCopy.id, FileCopy.checksum, StorageLocation)
                 .join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                 # nearline copies cannot be read without a restore, which costs (and takes hours)
                 .where(FileCopy.state.in_([CopyState.STORED, CopyState.CORRUPT]), streamable())
                 .order_by(FileCopy.checksum, StorageLocation.name))
        if location is not None:
            query = query.where(StorageLocation.name == location)
        with transaction(self.session_factory) as session:
            copies = [(copy_id, checksum, loc) for copy_id, checksum, loc in session.execute(query).all()]
        for copy_id, checksum, loc in copies:
            with transaction(self.session_factory) as session:
                file = session.get(File, checksum)
                if file is None:
                    continue
                layout = FileLayout.of(file)
            report["copies_checked"] += 1
            source = self.plugins.source(copy_id, loc)
            try:
                bad = self._bad_pieces(layout, source)
            except StorageUnavailable as exc:
                report["unreachable"].append(f"{checksum}@{loc.name}: {exc.detail}")
                continue
            self._record(copy_id, bad)
            if not bad:
                report["copies_ok"] += 1
                continue
            report["copies_bad"].append({"checksum": checksum, "location": loc.name, "pieces": sorted(bad)})
            if repair:
                left = self._repair(layout, source, bad)
                if left:
                    report["unrepairable"].append(f"{checksum}@{loc.name}")
                else:
                    report["repaired"].append(f"{checksum}@{loc.name}")
        log.info("verify: %s", report)
        return report

    @staticmethod
    def _bad_pieces(layout: FileLayout, source: Source, pieces: list[int] | None = None) -> dict[int, str]:
        """Pieces of this copy that are missing, short or fail their block digests, with the reason."""
        failures: list[StorageUnavailable] = []
        reader = VerifiedReader(layout, [source], lambda _source, _piece, exc: failures.append(exc))
        bad: dict[int, str] = {}
        for index, start, length in layout.pieces():
            if pieces is not None and index not in pieces:
                continue
            try:
                for _ in reader.iter_range(start, start + length):
                    pass
            except StorageUnavailable:
                if failures and not isinstance(failures[-1], PieceMissing | CorruptPiece):
                    raise failures[-1] from None  # the location is unreachable: no verdict on the copy
                bad[index] = failures[-1].code if failures else "PieceMissing"
        return bad

    def _record(self, copy_id: int, bad: dict[int, str]) -> None:
        """The copy's damage is exactly what was found; a copy marked corrupt before per-piece tracking
        serves again, its bad pieces (if any) recorded."""
        with transaction(self.session_factory) as session:
            checksum = session.scalar(select(FileCopy.checksum).where(FileCopy.id == copy_id))
            if checksum is None:
                return
            lock_file(session, checksum)
            session.execute(delete(DamagedPiece).where(DamagedPiece.copy_id == copy_id,
                                                       DamagedPiece.piece_index.not_in(list(bad))))
            for piece, reason in bad.items():
                record_damage(session, copy_id, piece, reason)
            session.execute(update(FileCopy).where(FileCopy.id == copy_id, FileCopy.state == CopyState.CORRUPT)
                            .values(state=CopyState.STORED))

    def _note(self, source: Source, piece: int, exc: StorageUnavailable) -> None:
        if isinstance(exc, PieceMissing | CorruptPiece):
            with transaction(self.session_factory) as session:
                record_damage(session, source.copy_id, piece, exc.code)

    def _repair(self, layout: FileLayout, target: Source, bad: dict[int, str]) -> list[int]:
        """Rewrite each bad piece from the other copies; returns the pieces no copy could give."""
        with transaction(self.session_factory) as session:
            sources = self.plugins.servable_sources(session, layout.checksum, excluding=target.copy_id)
        left = []
        for index in sorted(bad):
            start, length = index * layout.piece_size, layout.piece_length(index)
            reader = VerifiedReader(layout, sources, self._note)
            try:
                target.plugin.write_piece(layout.checksum, index, IterStream(reader.iter_range(start, start + length)),
                                          length)
            except StorageUnavailable as exc:
                log.warning("repair of piece %d of %s on %s failed: %s", index, layout.checksum, target.location,
                            exc.detail)
                left.append(index)
                continue
            # the rewritten piece is checked like any other before it serves again
            if self._bad_pieces(layout, target, [index]):
                left.append(index)
                continue
            with transaction(self.session_factory) as session:
                session.execute(delete(DamagedPiece).where(DamagedPiece.copy_id == target.copy_id,
                                                           DamagedPiece.piece_index == index))
        return left
