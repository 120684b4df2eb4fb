"""Permission checks that need the database: a bucket's owner and visibility, and who may manage it (both profiles)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import AccessPolicy, Principal
from storage_core.db import transaction
from storage_core.errors import BucketNotFound
from storage_core.models import Bucket


@dataclass(frozen=True, slots=True)
class BucketAccess:
    """What the access rules need to know of a bucket."""

    id: int
    name: str
    owner: str
    visibility: str


def bucket_access(conn: Connection | Session, name: str) -> BucketAccess:
    """The bucket's owner and visibility, or ``NotFound``."""
    row = conn.execute(select(Bucket.id, Bucket.owner, Bucket.visibility).where(Bucket.name == name)).first()
    if row is None:
        raise BucketNotFound(f"bucket {name!r} does not exist")
    return BucketAccess(row[0], name, row[1], row[2])


class PermissionService:
    def __init__(self, session_factory: sessionmaker[Session], policy: AccessPolicy):
        self.session_factory = session_factory
        self.policy = policy

    def require_manage(self, principal: Principal, bucket: str) -> None:
        if principal.is_admin:
            return
        with transaction(self.session_factory) as session:
            found = bucket_access(session, bucket)
        self.policy.require_manage(principal, bucket, found.owner)
