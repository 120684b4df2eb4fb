"""Scrubbing: read every block of every copy, mark bad copies corrupt, and repair them from a good copy."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.db import transaction
from storage_core.errors import CorruptPiece, PieceMissing, StorageUnavailable
from storage_core.layout import FileLayout
from storage_core.models import CopyState, File, FileCopy, StorageLocation
from storage_core.services.content import IterStream, lock_file
from storage_core.services.reader import VerifiedReader
from storage_core.services.sources import PluginCache, Source

log = logging.getLogger(__name__)


@profile("storage")
class Scrubber:
    def __init__(self, session_factory: sessionmaker[Session], plugins: PluginCache):
        self.session_factory = session_factory
        self.plugins = plugins

    def verify(self, location: str | None = None, repair: bool = False) -> dict[str, Any]:
        """Check every stored or corrupt copy (of one location, or all); with ``repair``, rewrite the bad
        pieces of a copy from the other copies and serve it again."""
        report: dict[str, Any] = {"copies_checked": 0, "copies_ok": 0, "copies_bad": [], "repaired": [],
                                  "unrepairable": [], "unreachable": []}
        query = (select(FileCopy.id, FileCopy.checksum, StorageLocation)
                 .join(StorageLocation, StorageLocation.id == FileCopy.location_id)
                 .where(FileCopy.state.in_([CopyState.STORED, CopyState.CORRUPT]))
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
            if not bad:
                report["copies_ok"] += 1
                self._set_state(copy_id, CopyState.STORED, only_from=CopyState.CORRUPT)
                continue
            report["copies_bad"].append({"checksum": checksum, "location": loc.name, "pieces": bad})
            self._set_state(copy_id, CopyState.CORRUPT, only_from=CopyState.STORED)
            if repair:
                if self._repair(layout, source, bad):
                    report["repaired"].append(f"{checksum}@{loc.name}")
                else:
                    report["unrepairable"].append(f"{checksum}@{loc.name}")
        log.info("verify: %s", report)
        return report

    @staticmethod
    def _bad_pieces(layout: FileLayout, source: Source) -> list[int]:
        """Pieces of this copy that are missing, short or fail their block checksums."""
        failures: list[StorageUnavailable] = []
        reader = VerifiedReader(layout, [source], lambda _source, exc: failures.append(exc))
        bad = []
        for index, start, length in layout.pieces():
            try:
                for _ in reader.iter_range(start, start + length):
                    pass
            except StorageUnavailable:
                if failures and not isinstance(failures[-1], PieceMissing | CorruptPiece):
                    raise failures[-1] from None  # the location is unreachable: no verdict on the copy
                bad.append(index)
        return bad

    def _repair(self, layout: FileLayout, target: Source, pieces: list[int]) -> bool:
        with transaction(self.session_factory) as session:
            sources = self.plugins.servable_sources(session, layout.checksum, excluding=target.copy_id)
        if not sources:
            return False
        reader = VerifiedReader(layout, sources)
        try:
            for index in pieces:
                start = index * layout.piece_size
                length = layout.piece_length(index)
                target.plugin.write_piece(layout.checksum, index, IterStream(reader.iter_range(start, start + length)),
                                          length)
        except StorageUnavailable as exc:
            log.warning("repair of %s on %s failed: %s", layout.checksum, target.location, exc.detail)
            return False
        # the rewritten pieces are checked like any other before the copy serves again
        if self._bad_pieces(layout, target):
            return False
        self._set_state(target.copy_id, CopyState.STORED, only_from=CopyState.CORRUPT)
        return True

    def _set_state(self, copy_id: int, state: str, only_from: str) -> None:
        with transaction(self.session_factory) as session:
            checksum = session.scalar(select(FileCopy.checksum).where(FileCopy.id == copy_id))
            if checksum is None:
                return
            lock_file(session, checksum)
            session.execute(update(FileCopy).where(FileCopy.id == copy_id, FileCopy.state == only_from)
                            .values(state=state))
