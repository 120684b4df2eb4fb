"""Access checks that need the database: who owns a bucket and who may see it (both profiles)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import AccessPolicy, Principal
from storage_core.db import transaction
from storage_core.errors import BucketNotFound
from storage_core.models import Bucket


class AccessService:
    def __init__(self, session_factory: sessionmaker[Session], policy: AccessPolicy):
        self.session_factory = session_factory
        self.policy = policy

    def _bucket(self, name: str) -> tuple[str, str]:
        with transaction(self.session_factory) as session:
            row = session.execute(select(Bucket.owner, Bucket.visibility).where(Bucket.name == name)).first()
        if row is None:
            raise BucketNotFound(f"bucket {name!r} does not exist")
        return row[0], row[1]

    def require_manage(self, principal: Principal, bucket: str) -> None:
        if principal.is_admin:
            return
        owner, _visibility = self._bucket(bucket)
        self.policy.require_manage(principal, bucket, owner)
