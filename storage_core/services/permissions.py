"""Permissions that need the database: a bucket's owner and visibility, who may manage it, presigned URLs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import AccessPolicy, Authenticator, BucketFacts, Principal
from storage_core.db import transaction
from storage_core.errors import BucketNotFound, ObjectNotFound
from storage_core.models import Bucket, Object, PresignRevocation
from storage_core.timeutil import now_us


def bucket_access(conn: Connection | Session, name: str) -> BucketFacts:
    """The bucket's owner and visibility, or ``NotFound``."""
    row = conn.execute(select(Bucket.id, Bucket.owner, Bucket.visibility).where(Bucket.name == name)).first()
    if row is None:
        raise BucketNotFound(f"bucket {name!r} does not exist")
    return BucketFacts(row[0], name, row[1], row[2])


class PermissionService:
    def __init__(self, session_factory: sessionmaker[Session], policy: AccessPolicy, authenticator: Authenticator,
                 clock: Callable[[], int] = now_us):
        self.session_factory = session_factory
        self.policy = policy
        self.authenticator = authenticator
        self.clock = clock

    def require_manage(self, principal: Principal, bucket: str) -> None:
        if principal.is_admin:
            return
        with transaction(self.session_factory) as session:
            found = bucket_access(session, bucket)
        self.policy.require_manage(principal, bucket, found.owner)

    def presign(self, signer: Principal, bucket: str, key: str, expires_in: int) -> tuple[str, int]:
        """A GET URL for an existing object, bound to the bucket's identity and the signer's rights now."""
        with transaction(self.session_factory) as session:
            facts = bucket_access(session, bucket)
            if session.scalar(select(Object.id).where(Object.bucket_id == facts.id, Object.key == key)) is None:
                raise ObjectNotFound(f"object {key!r} does not exist in bucket {bucket!r}")
        self.policy.require_manage(signer, bucket, facts.owner)
        return self.authenticator.presign(signer, facts, key, expires_in)

    def revoke_presigned(self, principal: Principal, account: str) -> dict[str, Any]:
        """Every URL ``account`` signed until now stops working, on every instance (checked at each use)."""
        if not (principal.is_admin or (principal.presigned is None and principal.authenticated
                                       and principal.account == account)):
            self.policy.require_admin(principal, f"revoke the presigned URLs of {account!r}")
        now = self.clock()
        with transaction(self.session_factory) as session:
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            session.execute(dialect.insert(PresignRevocation).values(account=account, revoked_before_us=now)
                            .on_conflict_do_update(index_elements=["account"], set_={"revoked_before_us": now}))
        return {"account": account, "revoked_before_us": now}
