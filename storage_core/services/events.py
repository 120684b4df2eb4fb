"""Events for the webhook: recorded in the transaction of what they report, delivered by the workers.

With ``STORAGE_EVENT_WEBHOOK_URL`` set, each restore that completes or fails records an event row in the
same transaction that marks the job done or failed, so no restart can lose it. Workers take due events
like restore jobs (``FOR UPDATE SKIP LOCKED`` and a lease), POST the JSON body signed with HMAC-SHA256 in
``X-Storage-Signature``, and retry with a doubling backoff until the receiver answers 2xx: at least once,
so receivers deduplicate by ``X-Storage-Event-Id``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage_core.db import transaction
from storage_core.metrics import EVENT_DELIVERIES
from storage_core.models import Event
from storage_core.settings import Settings
from storage_core.timeutil import now_us

log = logging.getLogger(__name__)

FILE_AVAILABLE = "file.available"
FILE_RESTORE_FAILED = "file.restore_failed"
SIGNATURE_HEADER = "X-Storage-Signature"
MAX_BACKOFF_SECONDS = 3600.0
SEND_TIMEOUT_SECONDS = 10.0


def sign(secret: str, body: bytes) -> str:
    """The signature of a body: the hex HMAC-SHA256 under the webhook secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(first: float, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: ``first``, doubling, at most an hour."""
    return min(first * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat() if moment is not None else None


class WebhookSender:
    """POSTs one event; a provider of its own so a test can swap the transport without rebuilding the outbox."""

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The HTTP status of the receiver's answer; ``OSError`` when it cannot be reached."""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code


class EventOutbox:
    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, sender: WebhookSender,
                 clock: Callable[[], int] = now_us):
        self.session_factory = session_factory
        self.url = settings.event_webhook_url
        self.secret = settings.event_webhook_secret
        self.lease = dt.timedelta(seconds=settings.restore_lease_seconds)
        self.retry_seconds = settings.restore_retry_seconds
        self.sender = sender
        self.clock = clock

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock() / 1e6, dt.UTC)

    def record(self, session: Session, type_: str, checksum: str, expires_at: dt.datetime | None) -> None:
        """In the caller's transaction: an event to deliver (nothing without a webhook URL)."""
        if not self.url:
            return
        now = self._now()
        body = json.dumps({"type": type_, "checksum": checksum, "expires_at": _iso(expires_at), "time": _iso(now)},
                          separators=(",", ":"))
        session.add(Event(type=type_, checksum=checksum, body=body, created_at=now, next_attempt_at=now, attempts=0))

    def deliver_once(self, owner: str) -> bool:
        """Deliver one due event; False when none is due (or no webhook is configured)."""
        if not self.url:
            return False
        now = self._now()
        with transaction(self.session_factory) as session:
            event = session.scalar(
                select(Event).where(Event.delivered_at.is_(None), Event.next_attempt_at <= now,
                                    or_(Event.lease_expires_at.is_(None), Event.lease_expires_at < now))
                .order_by(Event.next_attempt_at, Event.id).limit(1).with_for_update(skip_locked=True))
            if event is None:
                return False
            event.lease_owner, event.lease_expires_at = owner, now + self.lease
            event_id, type_, body, attempts = event.id, event.type, event.body.encode(), event.attempts
        headers = {"Content-Type": "application/json", "User-Agent": "storage-service",
                   "X-Storage-Event-Id": str(event_id), "X-Storage-Event-Type": type_,
                   "X-Storage-Delivery-Attempt": str(attempts + 1)}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        error = None
        try:
            status = self.sender.send(self.url, body, headers)
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except Exception as exc:  # unreachable, timed out, refused: all retried
            error = f"{type(exc).__name__}: {exc}"
        done = self._now()
        with transaction(self.session_factory) as session:
            values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "attempts": attempts + 1}
            if error is None:
                values["delivered_at"] = done
                values["last_error"] = None
            else:
                values["next_attempt_at"] = done + dt.timedelta(seconds=backoff(self.retry_seconds, attempts + 1))
                values["last_error"] = error[:1000]
            session.execute(update(Event).where(Event.id == event_id, Event.lease_owner == owner).values(**values))
        EVENT_DELIVERIES.labels("ok" if error is None else "failed").inc()
        if error is not None:
            log.warning("webhook delivery of event %d (%s) failed (attempt %d): %s", event_id, type_,
                        attempts + 1, error)
        return True

    def pending(self) -> int:
        with transaction(self.session_factory) as session:
            return session.scalar(select(func.count()).select_from(Event).where(Event.delivered_at.is_(None))) or 0

    def forget_delivered(self, older_than: dt.datetime) -> int:
        """Delivered events older than ``older_than`` (called by gc)."""
        with transaction(self.session_factory) as session:
            return session.execute(delete(Event).where(Event.delivered_at < older_than)).rowcount
