"""Downloads: resolve, apply the request's conditions and ranges, admit, charge, and hand over a charged body.

The data path reads top to bottom: a door (blueprint or S3) -> ``DownloadService.open`` -> ``Resolver``
(one query) -> ``VerifiedReader`` (copies in serving order, per-block verification and failover) ->
plugin. ``open`` knows nothing of HTTP frameworks: it takes the request's conditions as data and
returns the status, the headers as data and the body, so every door serves the same downloads with
the same charges. No database connection is held while the body streams.

A file whose only copies are nearline (and not cached) cannot be streamed: ``open`` raises
``RestoreInProgress`` (503, ``Retry-After``; the restore is started with ``STORAGE_RESTORE_ON_READ``) or
``NotAvailable`` (409) before anything is charged. A cached copy being read is leased (``RestoreCache``), so
that it is not evicted until the body closes.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import Principal
from storage_core.db import transaction
from storage_core.delivery import DeliveryWatch, SocketSender
from storage_core.errors import (
    NearlineOnly,
    NotAvailable,
    PreconditionFailed,
    RangeNotSatisfiable,
    RestoreInProgress,
    StorageUnavailable,
)
from storage_core.http_semantics import (
    Conditions,
    TooManyRanges,
    content_range,
    evaluate_preconditions,
    http_date,
    if_range_allows,
    multipart_layout,
    parse_range_header,
    unsatisfied_content_range,
)
from storage_core.services.cache import RestoreCache
from storage_core.services.content import ContentStore
from storage_core.services.limits import Admission, DownloadLimits
from storage_core.services.quota import Charge, QuotaService, ReadRequest
from storage_core.services.reader import FileSpan, VerifiedReader, servable
from storage_core.services.resolve import Resolver, Selector, Target
from storage_core.services.restore import AVAILABLE, QUEUED, RESTORING, Residency, RestoreService

log = logging.getLogger(__name__)

Chunks = Iterator[tuple[bytes | FileSpan, bool]]


def native_etag(target: Target) -> str:
    """The entity tag of the native API: the quoted sha256 of the content."""
    return f'"{target.file.checksum}"'


@dataclass
class Download:
    """What a door sends: ``status`` (200, 206 or 304), representation and range headers, and the body
    (None for HEAD and 304). The door adds its own headers (Content-Disposition, x-amz-meta-*, ...)."""

    status: int
    target: Target
    headers: dict[str, str]
    body: ChargedBody | None = None
    # a file with nearline copies and no online one: its storage class and restore (S3's x-amz-storage-class
    # and x-amz-restore); None otherwise
    residency: Residency | None = None


class ChargedBody:
    """The response body: counts the content bytes the client received, refunds the rest when closed.

    ``chunks`` yields ``(data, is_content)``; multipart framing is sent but not charged. A door that can
    see the client's socket attaches a ``DeliveryWatch`` (storage_core/delivery.py): a body that ends
    early is then refunded down to what the client acknowledged, and a client that stops reading is cut.
    A door that can also hand files to that socket attaches a ``SocketSender``: the reader then gives
    verified spans of piece files (``FileSpan``), sent with sendfile between the chunks yielded to the
    server, and counted as delivered as the kernel takes them.
    """

    def __init__(self, chunks: Chunks, quota: QuotaService, charge: Charge | None,
                 prefetched: list[tuple[bytes | FileSpan, bool]], limits: DownloadLimits,
                 admission: Admission | None, cache: RestoreCache | None = None,
                 cache_leases: list[int] | None = None, reader: VerifiedReader | None = None):
        self._chunks = chunks
        self._reader = reader
        self._sender: SocketSender | None = None
        self._quota = quota
        self._charge = charge
        self._prefetched = prefetched
        self._limits = limits
        self._admission = admission
        self._watch: DeliveryWatch | None = None
        self._cache = cache
        self._cache_leases = cache_leases or []
        self.delivered = 0
        self._complete = False
        self._closed = False

    def attach(self, watch: DeliveryWatch | None, sender: SocketSender | None = None) -> None:
        self._watch = watch
        if sender is not None and self._reader is not None:
            self._sender = sender
            self._reader.spans = True

    def __iter__(self) -> Iterator[bytes]:
        holds = self._admission is not None or bool(self._cache_leases)
        renew_at = time.monotonic() + self._limits.renew_every_seconds if holds else None
        watch, handed, sender = self._watch, 0, self._sender
        if watch is not None:
            watch.before_first_chunk()
        first = None  # the length of the first chunk, until the header's length is measured
        for source in (self._take_prefetched(), self._chunks):
            for data, is_content in source:
                if watch is not None and first is not None and handed:
                    # only the header and the first chunk are handed so far: their sum gives the header's
                    # length (measured here rather than after the first chunk, so a body of one chunk, which
                    # is complete once handed, costs no measurement)
                    watch.after_first_chunk(first)
                    first = None
                if type(data) is FileSpan:
                    if sender is None:
                        data = data.read()
                    else:
                        if not handed:  # the server sends the status line and headers on its first write
                            yield b""
                            if watch is not None:
                                watch.after_first_chunk(0)
                        before = sender.sent
                        try:
                            sender.send_file(data.fd, data.offset, data.length)
                        finally:
                            handed += sender.sent - before
                            if is_content:
                                self.delivered += sender.sent - before
                        if renew_at is not None and time.monotonic() >= renew_at:
                            self._renew()
                            renew_at = time.monotonic() + self._limits.renew_every_seconds
                        continue
                if watch is not None and not is_content:
                    watch.framing(handed, len(data))
                yield data
                # resumed: the server has handed the chunk to the kernel
                if not handed:
                    first = len(data)
                handed += len(data)
                if is_content:
                    self.delivered += len(data)
                if renew_at is not None and time.monotonic() >= renew_at:
                    self._renew()
                    renew_at = time.monotonic() + self._limits.renew_every_seconds
        self._complete = True

    def _take_prefetched(self) -> Chunks:
        """The chunks read before the answer, each let go once handed on (a slow client would otherwise keep
        the first block in memory for its whole download)."""
        while self._prefetched:
            yield self._prefetched.pop(0)

    def _renew(self) -> None:
        if self._admission is not None:
            self._limits.renew(self._admission)
        if self._cache is not None and self._cache_leases:
            self._cache.renew(self._cache_leases)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        received = self.delivered
        if self._sender is not None:
            self._sender.close()
        if self._watch is not None:
            if not self._complete:
                # handed to the kernel is not received: what the client acknowledged is
                acknowledged = self._watch.received_content()
                if acknowledged is not None:
                    received = acknowledged
            self._watch.done()
        if self._admission is not None:
            try:
                self._limits.release(self._admission)
            except Exception:  # the lease expires by itself
                log.exception("could not release download lease %s", self._admission.lease_id)
        if self._cache is not None and self._cache_leases:
            try:
                self._cache.release(self._cache_leases)
            except Exception:  # the leases expire by themselves
                log.exception("could not release cache leases %s", self._cache_leases)
        if self._charge is not None and received < self._charge.size:
            undelivered = self._charge.size - received
            log.info("read record %d ended after %d of %d bytes; refunding %d", self._charge.record_id,
                     received, self._charge.size, undelivered)
            try:
                self._quota.refund(self._charge, undelivered)
            except Exception:
                log.exception("refund of %d bytes for read record %d failed", undelivered, self._charge.record_id)


class _BecameAvailable(Exception):
    """A restore request found the file's cached copy still there: the download resolves again."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """How the body is laid out: status, content ranges, multipart framing, body length."""

    status: int
    ranges: list[tuple[int, int]]
    parts: list[tuple[bytes, int, int]] | None
    closing: bytes
    length: int

    @property
    def content_size(self) -> int:
        return sum(end - start for start, end in self.ranges)


class DownloadService:
    def __init__(self, session_factory: sessionmaker[Session], resolver: Resolver, content: ContentStore,
                 quota: QuotaService, limits: DownloadLimits, verify_reads: bool = True, public_max_age: int = 0,
                 restore: RestoreService | None = None, cache: RestoreCache | None = None,
                 restore_on_read: bool = True):
        self.session_factory = session_factory
        self.resolver = resolver
        self.content = content
        self.quota = quota
        self.limits = limits
        self.verify_reads = verify_reads
        # shared caches may keep public objects; a private object or a presigned read only the client may
        self._public_cache = f"public, max-age={public_max_age}" if public_max_age else "public, no-cache"
        self.restore = restore
        self.cache = cache
        self.restore_on_read = restore_on_read

    def open(self, selector: Selector, conditions: Conditions, principal: Principal,
             etag: Callable[[Target], str] = native_etag, restore_on_read: bool | None = None,
             residency_head: bool = False) -> Download:
        """Open what ``selector`` names for ``principal``: 304, 416 (raised), HEAD, or a charged body.

        ``etag`` is the door's entity tag of the target: conditions are evaluated against it. A file that is
        only nearline raises ``RestoreInProgress`` or ``NotAvailable`` (HEAD too, as GET would);
        ``restore_on_read`` overrides ``STORAGE_RESTORE_ON_READ`` (an S3 GetObject never starts a restore: S3
        clients ask with RestoreObject); ``residency_head``: a HEAD of such a file answers from the metadata
        with ``Download.residency`` instead (S3 HeadObject: x-amz-storage-class, x-amz-restore)."""
        for attempt in range(2):
            try:
                return self._open(selector, conditions, principal, etag, restore_on_read, residency_head)
            except _BecameAvailable:
                if attempt:
                    raise RestoreInProgress("the file's cached copy is changing; retry",
                                            headers={"Retry-After": "1"}) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, selector: Selector, conditions: Conditions, principal: Principal,
              etag: Callable[[Target], str], restore_on_read: bool | None, residency_head: bool) -> Download:
        # resolving holds a pooled connection only for its query (and, batched, shares it)
        target = self.resolver.resolve(selector, principal)
        file = target.file
        tag = etag(target)
        headers = {"ETag": tag, "Last-Modified": http_date(target.last_modified), "Accept-Ranges": "bytes",
                   "Cache-Control": self._cache_control(target, principal), "Content-Type": target.content_type}
        decided = evaluate_preconditions(conditions, tag, target.last_modified)
        if decided == 412:
            raise PreconditionFailed("a precondition of the request does not hold for this object",
                                     headers={k: v for k, v in headers.items() if k != "Content-Type"})
        if decided == 304:
            return Download(304, target, {k: v for k, v in headers.items() if k != "Content-Type"})
        ranges = None
        if conditions.range and if_range_allows(conditions.if_range, tag, int(target.last_modified.timestamp()),
                                                target.last_modified_strong):
            try:
                ranges = parse_range_header(conditions.range, file.size)
            except TooManyRanges as exc:
                raise RangeNotSatisfiable(str(exc), headers={"Content-Range": unsatisfied_content_range(file.size),
                                                             **headers}) from None
        if ranges == []:
            raise RangeNotSatisfiable(
                f"no requested range is within the {file.size} bytes of the object",
                headers={"Content-Range": unsatisfied_content_range(file.size), **headers},
            )
        shape = self._shape(ranges, file.size, target, headers)
        headers["Content-Length"] = str(shape.length)
        # HEAD answers what GET would: for a file that is only nearline, RestoreInProgress (its restore
        # started) or NotAvailable, unless the door shows it as S3's HeadObject does (``residency_head``)
        head = conditions.method == "HEAD"
        if target.nearline_only and not (head and residency_head):
            raise self._nearline_only(target, restore_on_read)
        # and 503 when some wanted piece has no copy that could serve it
        if shape.content_size and not target.nearline_only and not servable(file, target.sources, shape.ranges):
            raise StorageUnavailable(f"no enabled location holds a good copy of every wanted piece of {file.checksum}")
        if head:
            return Download(shape.status, target, headers, residency=self._residency(target))
        offered = len(target.sources)
        leases = self._lease_cached(target)
        if target.nearline_only:  # its cached copy was evicted since the resolve
            raise self._nearline_only(target, restore_on_read)
        try:
            if len(target.sources) < offered and shape.content_size and not servable(file, target.sources,
                                                                                      shape.ranges):
                raise StorageUnavailable(f"no enabled location holds a good copy of every wanted piece of "
                                         f"{file.checksum}")
            reader = VerifiedReader(file, target.sources, self.content.note_failure, verify=self.verify_reads)
            charge, admission = self._admit_and_charge(target, shape.content_size, principal.account)
        except BaseException:
            self._release(leases)
            raise
        # committed: the charge and its record are durable before any byte leaves
        chunks = self._chunks(reader, shape)
        # Read up to the first content block before answering: when no copy can serve it, the client
        # gets a clean 503 and the charge is undone, instead of a 200 that breaks at once.
        prefetched: list[tuple[bytes | FileSpan, bool]] = []
        try:
            for item in chunks:
                prefetched.append(item)
                if item[1]:
                    break
        except StorageUnavailable:
            self._undo(charge, admission)
            self._release(leases)
            raise
        return Download(shape.status, target, headers,
                        ChargedBody(chunks, self.quota, charge, prefetched, self.limits, admission,
                                    self.cache, leases, reader),
                        residency=self._residency(target))

    def _residency(self, target: Target) -> Residency | None:
        return self.restore.residency(target) if self.restore is not None and target.nearline else None

    def _lease_cached(self, target: Target) -> list[int]:
        """Lease the cached copies among the sources, so none is evicted while this body reads it; one evicted
        since the resolve is dropped from the sources. Returns the lease ids."""
        cached = [source.copy_id for source in target.sources if source.cached]
        if not cached or self.cache is None or not target.file.size:
            return []
        leases = self.cache.lease(cached)
        if len(leases) < len(cached):
            target.sources = [s for s in target.sources if not s.cached or s.copy_id in leases]
        return list(leases.values())

    def _release(self, leases: list[int]) -> None:
        if leases and self.cache is not None:
            try:
                self.cache.release(leases)
            except Exception:  # they expire by themselves
                log.exception("could not release cache leases %s", leases)

    def _nearline_only(self, target: Target, restore_on_read: bool | None) -> NearlineOnly | _BecameAvailable:
        """The error for a file that must be restored first (nothing is charged): the restore started (or
        joined) and 503 with Retry-After, or 409 when restores on read are off and none is under way."""
        start = self.restore_on_read if restore_on_read is None else restore_on_read
        checksum = target.file.checksum
        if self.restore is None:
            return NotAvailable(f"file {checksum} is on nearline storage only")
        state = self.restore.request_for_read(target, start)
        if state.state == AVAILABLE:  # an expired cached copy was still there, and is kept again: read it
            return _BecameAvailable()
        extra = {"checksum": checksum, "state": state.state}
        if state.state in (RESTORING, QUEUED):
            waiting = "waits for room in the restore cache" if state.state == QUEUED else "is being restored"
            return RestoreInProgress(f"file {checksum} is on nearline storage only and {waiting}; retry after "
                                     f"{state.retry_after} s", headers={"Retry-After": str(state.retry_after or 1)},
                                     extra=extra)
        return NotAvailable(f"file {checksum} is on nearline storage only: ask for a restore with "
                            "POST /api/v1/files/restore", extra=extra)

    def _cache_control(self, target: Target, principal: Principal) -> str:
        if target.visibility == "public-read" and principal.presigned is None:
            return self._public_cache
        return "private"

    def _admit_and_charge(self, target: Target, size: int, account: str) -> tuple[Charge | None, Admission | None]:
        """Take the account's download limits, then charge the bucket; a failed charge gives the limits back.

        The two are separate transactions: the charge is combined with concurrent charges of its bucket
        in a transaction of its own (see ``QuotaService``), which an admission cannot join."""
        if not size:
            return None, None
        admission = None
        if target.limited:
            with transaction(self.session_factory) as session:
                admission = self.limits.admit_in(session, account)
        try:
            charge = self.quota.charge(ReadRequest(target.bucket_id, target.key, target.object_id,
                                                   target.file.checksum, account, size))
        except Exception:
            self._undo(None, admission)
            raise
        return charge, admission

    def _undo(self, charge: Charge | None, admission: Admission | None) -> None:
        if charge is not None:
            self.quota.refund(charge, charge.size)
        if admission is not None:
            self.limits.release(admission, undo_monthly=True)

    @staticmethod
    def _shape(ranges: list[tuple[int, int]] | None, size: int, target: Target, headers: dict[str, str]) -> _Shape:
        if ranges is None:
            return _Shape(200, [(0, size)], None, b"", size)
        if len(ranges) == 1:
            start, end = ranges[0]
            headers["Content-Range"] = content_range(start, end, size)
            return _Shape(206, ranges, None, b"", end - start)
        boundary = secrets.token_hex(16)
        parts, closing, length = multipart_layout(ranges, size, target.content_type, boundary)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        return _Shape(206, ranges, parts, closing, length)

    @staticmethod
    def _chunks(reader: VerifiedReader, shape: _Shape) -> Chunks:
        if shape.parts is None:
            for start, end in shape.ranges:
                for data in reader.iter_range(start, end):
                    yield data, True
            return
        for header, start, end in shape.parts:
            yield header, False
            for data in reader.iter_range(start, end):
                yield data, True
        yield shape.closing, False
