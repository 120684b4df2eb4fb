"""Who is asking and what they may do: bearer tokens (JWT), presigned URLs, and the access policy.

- Tokens: HS256 with ``STORAGE_JWT_SECRET``, and/or EdDSA/RS256 verified with ``STORAGE_JWT_PUBLIC_KEY``
  (or the public half of ``STORAGE_JWT_PRIVATE_KEY``). ``alg=none`` and any algorithm the service has
  no key for are refused; ``sub`` and ``exp`` are required.
- Presigned URLs: HMAC-SHA256 with ``STORAGE_URL_SIGNING_SECRET`` over the method, the decoded path,
  the expiry and the account charged. The secret can only sign download URLs, so a downloader that
  holds it (and only the public token key) can verify URLs without being able to mint tokens.
- Policy: admins may do everything; a bucket's owner manages it and its objects; reads of a
  ``public-read`` bucket need nobody; a presigned URL reads exactly its object.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import ColumnElement, and_, or_, true

from storage_core.errors import ConfigurationError, Forbidden, PresignUnavailable, Unauthorized
from storage_core.settings import Settings

log = logging.getLogger(__name__)

ADMIN = "admin"
ANONYMOUS = "anonymous"
EXPIRES, ACCOUNT, SIGNATURE = "X-Storage-Expires", "X-Storage-Account", "X-Storage-Signature"
BUCKET_ID, ISSUED, AS_ADMIN = "X-Storage-Bucket", "X-Storage-Issued", "X-Storage-Admin"
PRESIGN_PARAMS = (EXPIRES, ACCOUNT, SIGNATURE, BUCKET_ID, ISSUED, AS_ADMIN)


@dataclass(frozen=True, slots=True)
class PresignedRead:
    """What a presigned URL grants: reading one key of one bucket (by identity, not only by name), as its
    signer could when it was signed. Checked again at each use (``AccessPolicy.can_read``)."""

    bucket: str
    key: str
    bucket_id: int
    issued_us: int  # when it was signed: revocations of the signer's URLs made later invalidate it
    admin: bool = False  # signed by an admin (who may read any bucket), not by the bucket's owner


@dataclass(frozen=True, slots=True)
class BucketFacts:
    """What the access rules need to know of a bucket."""

    id: int
    name: str
    owner: str
    visibility: str


@dataclass(frozen=True)
class Principal:
    """The caller: an account with roles; a presigned URL also names the one object it may read."""

    account: str
    roles: frozenset[str] = field(default_factory=frozenset)
    authenticated: bool = True
    presigned: PresignedRead | None = None
    # the S3 access key a request was signed with, when its existence is to be checked by the resolving
    # query itself (the S3 door's downloads: see services/resolve.py)
    access_key: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS, authenticated=False)
DEVELOPMENT_ADMIN = Principal(ADMIN, frozenset({ADMIN}))


def _load_public_key(pem: str) -> tuple[Any, str]:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigurationError(f"STORAGE_JWT_PUBLIC_KEY: not a PEM public key ({exc})") from None
    return key, _algorithm_of(key, "STORAGE_JWT_PUBLIC_KEY")


def _load_private_key(pem: str) -> tuple[Any, str]:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"STORAGE_JWT_PRIVATE_KEY: not an unencrypted PEM private key ({exc})") from None
    return key, _algorithm_of(key, "STORAGE_JWT_PRIVATE_KEY")


def _algorithm_of(key: Any, variable: str) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    raise ConfigurationError(f"{variable}: only Ed25519 (EdDSA) and RSA (RS256) keys are supported")


class Authenticator:
    """Verifies bearer tokens and presigned URLs; issues both where it holds the keys."""

    def __init__(self, settings: Settings):
        self.disabled = settings.auth_disabled
        self._keys: dict[str, Any] = {}  # algorithm -> verification key
        self._signing: tuple[Any, str] | None = None
        if settings.jwt_secret:
            self._keys["HS256"] = settings.jwt_secret
            self._signing = (settings.jwt_secret, "HS256")
        if settings.jwt_private_key:
            private, algorithm = _load_private_key(settings.jwt_private_key)
            self._keys[algorithm] = private.public_key()
            self._signing = (private, algorithm)
        if settings.jwt_public_key:
            public, algorithm = _load_public_key(settings.jwt_public_key)
            self._keys[algorithm] = public
        url_secret = settings.url_signing_secret or (
            hmac.new(settings.jwt_secret.encode(), b"storage presigned URLs", hashlib.sha256).hexdigest()
            if settings.jwt_secret else "")
        if not url_secret and settings.auth_disabled:
            # development: URLs are not checked anyway, but presign still answers (valid in this process)
            url_secret = secrets.token_hex(32)
        self._url_key = url_secret.encode()
        if not self._keys and not self.disabled:
            raise ConfigurationError(
                "authentication is not configured: set STORAGE_JWT_SECRET or STORAGE_JWT_PUBLIC_KEY "
                "(or STORAGE_JWT_PRIVATE_KEY), or STORAGE_AUTH_DISABLED=1 for development only")
        if self.disabled:
            log.warning("!!! STORAGE_AUTH_DISABLED=1: authentication is OFF and every request is admin. "
                        "Never run this in production. !!!")

    # ---- tokens --------------------------------------------------------------------------------------

    def verify_token(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed bearer token") from None
        algorithm = header.get("alg")
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:  # 'none', or an algorithm this service holds no key for
            raise Unauthorized(f"token algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], options={"require": ["sub", "exp"]},
                                leeway=5)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        roles = claims.get("roles") or []
        if not isinstance(claims["sub"], str) or not claims["sub"] or not isinstance(roles, list):
            raise Unauthorized("token claims: sub must be a string and roles a list")
        return Principal(claims["sub"], frozenset(str(r) for r in roles))

    def issue_token(self, subject: str, roles: list[str], ttl: int) -> str:
        if self._signing is None:
            raise ConfigurationError("no signing key: set STORAGE_JWT_SECRET or STORAGE_JWT_PRIVATE_KEY")
        key, algorithm = self._signing
        now = int(time.time())
        return jwt.encode({"sub": subject, "roles": roles, "iat": now, "exp": now + ttl}, key, algorithm=algorithm)

    # ---- presigned URLs ------------------------------------------------------------------------------

    def _url_signature(self, method: str, path: str, expires: int, account: str, bucket_id: int, issued_us: int,
                       admin: bool) -> str:
        message = f"{method}\n{path}\n{expires}\n{account}\n{bucket_id}\n{issued_us}\n{int(admin)}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def presign(self, signer: Principal, bucket: BucketFacts, key: str, expires_in: int) -> tuple[str, int]:
        """(path with query, expiry) of a GET URL for ``key`` of ``bucket``, charged to the signer's account."""
        if not self._url_key:
            raise PresignUnavailable("this service has no URL signing secret: set STORAGE_URL_SIGNING_SECRET")
        path = f"/api/v1/buckets/{bucket.name}/objects/{key}"
        issued_us = time.time_ns() // 1000
        expires = issued_us // 1_000_000 + expires_in
        params: dict[str, str | int] = {EXPIRES: expires, ACCOUNT: signer.account, BUCKET_ID: bucket.id,
                                        ISSUED: issued_us}
        if signer.is_admin:
            params[AS_ADMIN] = 1
        params[SIGNATURE] = self._url_signature("GET", path, expires, signer.account, bucket.id, issued_us,
                                                signer.is_admin)
        return f"{quote(path)}?{urlencode(params)}", expires

    def verify_presigned(self, method: str, path: str, params: dict[str, str]) -> Principal:
        if not self._url_key:
            raise Forbidden("presigned URLs are not accepted here (no URL signing secret)")
        target = presigned_target(path)
        try:
            expires, bucket_id, issued_us = int(params[EXPIRES]), int(params[BUCKET_ID]), int(params[ISSUED])
            account, signature = params[ACCOUNT], params[SIGNATURE]
            admin = {"1": True, None: False}[params.get(AS_ADMIN)]
        except (KeyError, ValueError):
            raise Forbidden("incomplete presigned URL") from None
        # a HEAD may use a URL signed for GET: it reads nothing
        signed_method = "GET" if method in ("GET", "HEAD") else method
        expected = self._url_signature(signed_method, path, expires, account, bucket_id, issued_us, admin)
        if not hmac.compare_digest(expected, signature):
            raise Forbidden("presigned URL signature does not match")
        if expires < time.time():
            raise Forbidden("presigned URL expired")
        if target is None:
            raise Forbidden("presigned URLs read objects only")
        return Principal(account, authenticated=True,
                         presigned=PresignedRead(target[0], target[1], bucket_id, issued_us, admin))

    def authenticate(self, method: str, path: str, authorization: str | None,
                     params: dict[str, str]) -> Principal:
        """The principal of a request: development admin, bearer token, presigned URL or anonymous."""
        if self.disabled:
            return DEVELOPMENT_ADMIN
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Authorization must be 'Bearer <token>'")
            return self.verify_token(token.strip())
        if any(name in params for name in PRESIGN_PARAMS):
            return self.verify_presigned(method, path, params)
        return ANONYMOUS_PRINCIPAL


def presigned_target(path: str) -> tuple[str, str] | None:
    prefix = "/api/v1/buckets/"
    if not path.startswith(prefix):
        return None
    bucket, sep, key = path[len(prefix):].partition("/objects/")
    return (bucket, key) if sep and bucket and key else None


class AccessPolicy:
    """The one place that says who may do what; raises Unauthorized (401) or Forbidden (403)."""

    @staticmethod
    def _deny(principal: Principal, what: str) -> None:
        if not principal.authenticated:
            raise Unauthorized(f"authentication required to {what}")
        raise Forbidden(f"{principal.account} may not {what}")

    def require_admin(self, principal: Principal, what: str = "do this") -> None:
        if not principal.is_admin:
            self._deny(principal, what)

    def require_authenticated(self, principal: Principal) -> None:
        if not principal.authenticated or principal.presigned is not None:
            raise Unauthorized("a bearer token is required")

    def can_manage(self, principal: Principal, owner: str) -> bool:
        return principal.is_admin or (principal.presigned is None and principal.authenticated
                                      and principal.account == owner)

    def require_manage(self, principal: Principal, bucket: str, owner: str) -> None:
        if not self.can_manage(principal, owner):
            self._deny(principal, f"manage bucket {bucket!r}")

    def can_read(self, principal: Principal, bucket: BucketFacts, key: str | None,
                 revoked_before_us: int | None = None) -> bool:
        """Whether the principal may read ``key`` (or, with None, anything) of the bucket: the read rule.

        A presigned URL reads its one key of the bucket it was signed for (a bucket re-created under the
        same name is another bucket), only while its signer still could (the owner, or an admin), and
        only if the signer's URLs were not revoked after it was signed (``revoked_before_us``)."""
        grant = principal.presigned
        if grant is not None:
            return (grant.bucket == bucket.name and grant.key == key and grant.bucket_id == bucket.id
                    and (grant.admin or bucket.owner == principal.account or bucket.visibility == "public-read")
                    and (revoked_before_us is None or grant.issued_us >= revoked_before_us))
        return bucket.visibility == "public-read" or self.can_manage(principal, bucket.owner)

    def readable(self, principal: Principal, buckets: Any, key: Any, revoked_before_us: Any = None
                 ) -> ColumnElement[bool]:
        """``can_read`` as a SQL condition over ``buckets`` (the table or its class: id, name, owner,
        visibility), a ``key`` column and the signer's revocation column; tests check the two agree on a
        table of cases."""
        grant = principal.presigned
        if grant is not None:
            not_revoked = true() if revoked_before_us is None else or_(
                revoked_before_us.is_(None), revoked_before_us <= grant.issued_us)
            return and_(buckets.name == grant.bucket, key == grant.key, buckets.id == grant.bucket_id,
                        true() if grant.admin else or_(buckets.owner == principal.account,
                                                       buckets.visibility == "public-read"),
                        not_revoked)
        if principal.is_admin:
            return true()
        terms: list[ColumnElement[bool]] = [buckets.visibility == "public-read"]
        if principal.authenticated:
            terms.append(buckets.owner == principal.account)
        return or_(*terms)

    def require_read(self, principal: Principal, bucket: BucketFacts, key: str | None = None,
                     revoked_before_us: int | None = None) -> None:
        if not self.can_read(principal, bucket, key, revoked_before_us):
            if principal.presigned is not None:
                raise Forbidden("this presigned URL no longer grants access: its object, bucket or signer's "
                                "rights changed, or its signer revoked it")
            self._deny(principal, f"read from bucket {bucket.name!r}")
