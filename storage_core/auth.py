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
PRESIGN_PARAMS = (EXPIRES, ACCOUNT, SIGNATURE)


@dataclass(frozen=True)
class Principal:
    """The caller: an account with roles; a presigned URL also names the one object it may read."""

    account: str
    roles: frozenset[str] = field(default_factory=frozenset)
    authenticated: bool = True
    presigned: tuple[str, str] | None = None  # (bucket, key)

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

    def _url_signature(self, method: str, path: str, expires: int, account: str) -> str:
        message = f"{method}\n{path}\n{expires}\n{account}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def presign(self, path: str, account: str, expires_in: int) -> tuple[str, int]:
        """(path with query, expiry) of a GET URL for ``path`` (decoded), charged to ``account``."""
        if not self._url_key:
            raise PresignUnavailable("this service has no URL signing secret: set STORAGE_URL_SIGNING_SECRET")
        expires = int(time.time()) + expires_in
        query = urlencode({EXPIRES: expires, ACCOUNT: account,
                           SIGNATURE: self._url_signature("GET", path, expires, account)})
        return f"{quote(path)}?{query}", expires

    def verify_presigned(self, method: str, path: str, params: dict[str, str]) -> Principal:
        if not self._url_key:
            raise Forbidden("presigned URLs are not accepted here (no URL signing secret)")
        try:
            expires = int(params[EXPIRES])
            account, signature = params[ACCOUNT], params[SIGNATURE]
        except (KeyError, ValueError):
            raise Forbidden("incomplete presigned URL") from None
        # a HEAD may use a URL signed for GET: it reads nothing
        signed_method = "GET" if method in ("GET", "HEAD") else method
        expected = self._url_signature(signed_method, path, expires, account)
        if not hmac.compare_digest(expected, signature):
            raise Forbidden("presigned URL signature does not match")
        if expires < time.time():
            raise Forbidden("presigned URL expired")
        return Principal(account, authenticated=True, presigned=presigned_target(path))

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

    def can_read(self, principal: Principal, bucket: str, owner: str, visibility: str, key: str | None) -> bool:
        """Whether the principal may read ``key`` (or, with None, anything) of the bucket: the read rule."""
        if visibility == "public-read" or self.can_manage(principal, owner):
            return True
        return principal.presigned is not None and principal.presigned == (bucket, key)

    def readable(self, principal: Principal, buckets: Any, key: Any) -> ColumnElement[bool]:
        """``can_read`` as a SQL condition over ``buckets`` (the table or its class: name, owner, visibility)
        and a ``key`` column; tests check the two agree on a table of cases."""
        if principal.is_admin:
            return true()
        terms: list[ColumnElement[bool]] = [buckets.visibility == "public-read"]
        if principal.presigned is None and principal.authenticated:
            terms.append(buckets.owner == principal.account)
        if principal.presigned is not None:
            terms.append(and_(buckets.name == principal.presigned[0], key == principal.presigned[1]))
        return or_(*terms)

    def require_read(self, principal: Principal, bucket: str, owner: str, visibility: str,
                     key: str | None = None) -> None:
        if not self.can_read(principal, bucket, owner, visibility, key):
            self._deny(principal, f"read from bucket {bucket!r}")
