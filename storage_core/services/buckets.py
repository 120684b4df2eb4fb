"""Buckets: creation, settings (visibility, quotas, target locations) and deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import case, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profiles import profile
from storage_core.auth import Principal
from storage_core.db import transaction
from storage_core.errors import BucketExists, BucketNotEmpty, BucketNotFound, Forbidden
from storage_core.models import Bucket, BucketTraffic, Object
from storage_core.names import validate_bucket_name
from storage_core.services.locations import validate_location_names
from storage_core.settings import Settings
from storage_core.timeutil import now_us, year_month_of

# what the service operator grants (free quotas, placement) or who is billed: not the owner's to change
ADMIN_ONLY_FIELDS = frozenset({"owner", "free_read_quota", "monthly_free_read_quota", "locations"})


def get_bucket(session: Session, name: str) -> Bucket:
    bucket = session.scalar(select(Bucket).where(Bucket.name == name))
    if bucket is None:
        raise BucketNotFound(f"bucket {name!r} does not exist")
    return bucket


def bucket_view(bucket: Bucket) -> dict[str, Any]:
    return {
        "name": bucket.name,
        "owner": bucket.owner,
        "visibility": bucket.visibility,
        "charged_read_quota": bucket.charged_read_quota,
        "free_read_quota": bucket.free_read_quota,
        "monthly_free_read_quota": bucket.monthly_free_read_quota,
        "locations": sorted(loc.name for loc in bucket.locations),
        "created_at": bucket.created_at,
    }


@profile("storage")
class BucketService:
    def __init__(self, session_factory: sessionmaker[Session], settings: Settings,
                 clock: Callable[[], int] = now_us):
        self.session_factory = session_factory
        self.settings = settings
        self.clock = clock

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        query = select(Bucket).order_by(Bucket.name)
        if not principal.is_admin:
            query = query.where(Bucket.owner == principal.account)
        with transaction(self.session_factory) as session:
            return [bucket_view(b) for b in session.scalars(query)]

    def get(self, name: str) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            return bucket_view(get_bucket(session, name))

    def create(self, data: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Any account may create a bucket it owns; only admins choose another owner or the grants."""
        validate_bucket_name(data["name"])
        owner = data.get("owner") or principal.account
        if not principal.is_admin and (owner != principal.account or set(data) & ADMIN_ONLY_FIELDS):
            raise Forbidden("only admins set a bucket's owner, free quotas or locations")
        try:
            with transaction(self.session_factory) as session:
                bucket = Bucket(
                    name=data["name"],
                    owner=owner,
                    visibility=data["visibility"],
                    charged_read_quota=data["charged_read_quota"],
                    free_read_quota=data.get("free_read_quota", self.settings.free_read_quota),
                    monthly_free_read_quota=data.get(
                        "monthly_free_read_quota", self.settings.monthly_free_read_quota),
                )
                bucket.locations = validate_location_names(session, data.get("locations") or [])
                session.add(bucket)
                session.flush()
                return bucket_view(bucket)
        except IntegrityError:
            raise BucketExists(f"bucket {data['name']!r} already exists") from None

    def update(self, name: str, changes: dict[str, Any], principal: Principal) -> dict[str, Any]:
        if not principal.is_admin and set(changes) & ADMIN_ONLY_FIELDS:
            raise Forbidden(f"only admins change {', '.join(sorted(set(changes) & ADMIN_ONLY_FIELDS))}")
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, name)
            if "locations" in changes:
                bucket.locations = validate_location_names(session, changes.pop("locations"))
            granted_before = bucket.free_read_quota
            for field, value in changes.items():
                setattr(bucket, field, value)
            self._apply_to_current_month(session, bucket, changes, granted_before)
            session.flush()
            return bucket_view(bucket)

    def _apply_to_current_month(self, session: Session, bucket: Bucket, changes: dict[str, Any],
                                granted_before: int) -> None:
        """New grants take effect at once: the month rows already made follow them (later months are made
        from the bucket). What was consumed stays consumed; a quota lowered below it leaves nothing."""
        month = year_month_of(self.clock())
        figures = {}
        if "charged_read_quota" in changes:
            figures["charged_quota_size"] = changes["charged_read_quota"]
        if "monthly_free_read_quota" in changes:
            figures["monthly_free_quota_size"] = changes["monthly_free_read_quota"]
        if figures:
            session.execute(update(BucketTraffic)
                            .where(BucketTraffic.bucket_id == bucket.id, BucketTraffic.year_month >= month)
                            .values(**figures))
        delta = changes.get("free_read_quota", granted_before) - granted_before
        if delta:
            # the one-time grant's rest lives in the latest month row (each new month carries it over)
            latest = (select(func.max(BucketTraffic.year_month)).where(BucketTraffic.bucket_id == bucket.id)
                      .scalar_subquery())
            remaining = BucketTraffic.free_quota_remaining + delta
            session.execute(update(BucketTraffic)
                            .where(BucketTraffic.bucket_id == bucket.id, BucketTraffic.year_month == latest)
                            .values(free_quota_remaining=case((remaining < 0, 0), else_=remaining)))

    def delete(self, name: str) -> None:
        with transaction(self.session_factory) as session:
            bucket = get_bucket(session, name)
            if session.scalar(select(exists().where(Object.bucket_id == bucket.id))):
                raise BucketNotEmpty(f"bucket {name!r} is not empty")
            session.delete(bucket)
