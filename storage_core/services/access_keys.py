"""S3 access keys: creation (the secret shown once), listing, deletion, and the per-request lookup of the S3 door.

Secrets are sealed at rest with ``storage_core.s3.keys.SecretBox`` under a key from the environment
(``STORAGE_S3_SEALING_KEY``, default derived from ``STORAGE_JWT_SECRET``; see docs/access.md). Every
signed S3 request looks its key up by primary key (one indexed read, no cache), so a deleted key stops
working on every instance at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, String, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from storage_core.auth import ADMIN, Principal
from storage_core.db import PreparedQuery, connection, transaction
from storage_core.errors import ConfigurationError, Forbidden, NotFound, PresignUnavailable, Unauthorized
from storage_core.models import AccessKey
from storage_core.s3.keys import (
    SealedSecretError,
    SecretBox,
    derive_key,
    is_access_key_id,
    new_access_key_id,
    new_secret,
)
from storage_core.services.combiner import Combiner
from storage_core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What a valid access key stands for: its secret (to check the signature) and the principal it acts as."""

    access_key_id: str
    secret: str
    account: str
    roles: frozenset[str]

    @property
    def principal(self) -> Principal:
        return Principal(self.account, self.roles)

    def checked_principal(self) -> Principal:
        """The principal, carrying the key id for the resolving statement to check (see ``remembered``)."""
        return Principal(self.account, self.roles, access_key=self.access_key_id)


def secret_box(settings: Settings) -> SecretBox | None:
    """The sealing box of this deployment, or None when no material is configured (S3 keys then unusable)."""
    material = settings.s3_sealing_key or (
        hmac.new(settings.jwt_secret.encode(), b"storage s3 access-key sealing", hashlib.sha256).hexdigest()
        if settings.jwt_secret else "")
    if not material:
        if not settings.auth_disabled:
            return None
        material = secrets.token_hex(32)  # development: keys live as long as this process
    previous = [derive_key(m.strip()) for m in settings.s3_sealing_previous.split(",") if m.strip()]
    return SecretBox(derive_key(material), previous)


def key_view(row: AccessKey, secret: str | None = None) -> dict[str, Any]:
    view = {"access_key_id": row.id, "account": row.account, "roles": list(row.roles),
            "description": row.description, "created_at": row.created_at}
    if secret is not None:
        view["secret_access_key"] = secret
    return view


REMEMBERED_KEYS = 10_000  # identities kept per process by ``remembered``

_keys = AccessKey.__table__
_COLUMNS = (_keys.c.id, _keys.c.account, _keys.c.roles, _keys.c.sealed_secret)
BY_ID = PreparedQuery("access_key_by_id", select(*_COLUMNS).where(_keys.c.id == bindparam("id")))
# the lookups that arrive together in one worker share one round trip (PostgreSQL), as resolves do
BY_IDS = PreparedQuery("access_keys_by_ids", select(*_COLUMNS).where(
    _keys.c.id == func.any(bindparam("ids", type_=ARRAY(String)))))


class AccessKeyService:
    def __init__(self, session_factory: sessionmaker[Session], autocommit_engine: Engine, settings: Settings):
        self.session_factory = session_factory
        self.engine = autocommit_engine
        self.box = secret_box(settings)
        self._batched = autocommit_engine.dialect.name == "postgresql"
        self._combiner: Combiner[Any] = Combiner(self._lookup_batch)
        self._known: OrderedDict[str, KeyIdentity] = OrderedDict()

    def _require_box(self) -> SecretBox:
        if self.box is None:
            raise PresignUnavailable("S3 access keys need STORAGE_S3_SEALING_KEY or STORAGE_JWT_SECRET")
        return self.box

    def create(self, principal: Principal, account: str | None = None, roles: list[str] | None = None,
               description: str | None = None) -> dict[str, Any]:
        """A new key for ``account`` (default: the caller) with ``roles``; the answer holds the secret, once."""
        if not principal.authenticated or principal.presigned is not None:
            raise Unauthorized("a bearer token is required")
        account = account or principal.account
        roles = sorted(set(roles if roles is not None else principal.roles))
        if not principal.is_admin:
            if account != principal.account:
                raise Forbidden("only admins create access keys for another account")
            if not set(roles) <= principal.roles:
                raise Forbidden(f"an access key cannot have roles its creator lacks: "
                                f"{', '.join(sorted(set(roles) - principal.roles))}")
        box = self._require_box()
        key_id, secret = new_access_key_id(), new_secret()
        with transaction(self.session_factory) as session:
            row = AccessKey(id=key_id, account=account, roles=roles, description=description,
                            sealed_secret=box.seal(key_id, secret))
            session.add(row)
            session.flush()
            return key_view(row, secret)

    def list(self, principal: Principal, account: str | None = None) -> list[dict[str, Any]]:
        query = select(AccessKey).order_by(AccessKey.account, AccessKey.created_at, AccessKey.id)
        if not principal.is_admin:
            query = query.where(AccessKey.account == principal.account)
        elif account:
            query = query.where(AccessKey.account == account)
        with transaction(self.session_factory) as session:
            return [key_view(row) for row in session.scalars(query)]

    def delete(self, principal: Principal, key_id: str) -> None:
        with transaction(self.session_factory) as session:
            row = session.get(AccessKey, key_id)
            # another account's key is "not found": its existence does not leak
            if row is None or not (principal.is_admin or row.account == principal.account):
                raise NotFound(f"access key {key_id!r} does not exist")
            session.execute(delete(AccessKey).where(AccessKey.id == key_id))

    def lookup(self, key_id: str) -> KeyIdentity | None:
        """The identity of an existing key, or None (unknown, deleted, or sealed under a key not held here)."""
        if self.box is None or not is_access_key_id(key_id):
            return None
        if self._batched:
            row = self._combiner.submit(BY_IDS.name, key_id)
        else:
            with connection(self.engine) as conn:
                rows = BY_ID.all(conn, id=key_id)
            row = rows[0] if rows else None
        if row is None:
            return None
        try:
            secret = self.box.open(key_id, row.sealed_secret)
        except SealedSecretError as exc:
            log.warning("access key %s cannot be used: %s", key_id, exc)
            return None
        roles = json.loads(row.roles) if isinstance(row.roles, str) else row.roles
        roles = roles if isinstance(roles, list) else []
        return KeyIdentity(key_id, secret, row.account, frozenset(str(r) for r in roles))


    def remembered(self, key_id: str) -> KeyIdentity | None:
        """``lookup`` through a bounded in-process memory of identities, for the S3 door's downloads only:
        they carry the key id into the resolving statement, which refuses a key deleted since
        (``AccessKeyNotFound``), so a deleted key still fails at once and no extra round trip is paid."""
        found = self._known.get(key_id)
        if found is not None:
            self._known.move_to_end(key_id)
            return found
        found = self.lookup(key_id)
        if found is not None:
            self._known[key_id] = found
            while len(self._known) > REMEMBERED_KEYS:
                self._known.popitem(last=False)
        return found

    def forget(self, key_id: str) -> None:
        self._known.pop(key_id, None)

    def _lookup_batch(self, _name: str, ids: list[str]) -> list[Any]:
        with connection(self.engine) as conn:
            rows = {row.id: row for row in BY_IDS.all(conn, ids=sorted(set(ids)))}
        return [rows.get(key_id) for key_id in ids]


def require_sealing(settings: Settings) -> None:
    """At start of an S3 listener: signed requests need a sealing key (fail loudly, not per request)."""
    if secret_box(settings) is None:
        raise ConfigurationError("STORAGE_S3_BIND needs STORAGE_S3_SEALING_KEY (or STORAGE_JWT_SECRET) to open "
                                 "the secrets of S3 access keys")


__all__ = ["ADMIN", "AccessKeyService", "KeyIdentity", "require_sealing", "secret_box"]
