"""What every blueprint shares: the container accessor, the account of a request, the one error handler."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, json, request
from marshmallow import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import profiles
from storage_core.auth import ANONYMOUS_PRINCIPAL, Principal
from storage_core.container import Container
from storage_core.db import is_disconnect
from storage_core.errors import InvalidArgument, StorageError
from storage_core.schemas import unsafe_text

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
F = TypeVar("F", bound=Callable[..., Any])

HTTP_CODES = {
    400: "InvalidArgument", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 411: "MissingContentLength", 413: "EntityTooLarge", 415: "UnsupportedMediaType",
    416: "InvalidRange", 422: "InvalidArgument", 429: "TooManyRequests", 503: "ServiceUnavailable",
}


def services() -> Container:
    return current_app.extensions["container"]


# endpoints anyone may call, without even a valid token: probes, the API description and the console's
# page and assets (the page holds no data; it calls the API with the token the person signs in with)
OPEN_ENDPOINTS = frozenset({"health.live", "health.ready", "health.metrics", "api-docs.openapi_json",
                            "console.index", "console.static"})


def reject_unsafe_text() -> None:
    """Path parts and query values the database cannot hold (NUL) are 400 before any query runs."""
    for name, value in [*(request.view_args or {}).items(), *request.args.items(multi=True)]:
        problem = unsafe_text(value) if isinstance(value, str) else None
        if problem:
            raise InvalidArgument(f"{name} {problem}")


def authenticate() -> None:
    """Before every request: who is asking (bad credentials are 401 here, before any work)."""
    if request.endpoint in OPEN_ENDPOINTS:
        # a probe never fails on credentials; a valid admin token only shows more (readiness details)
        try:
            g.principal = services().authenticator().authenticate(
                request.method, request.path, request.headers.get("Authorization"), request.args.to_dict())
        except StorageError:
            g.principal = ANONYMOUS_PRINCIPAL
        return
    g.principal = services().authenticator().authenticate(
        request.method, request.path, request.headers.get("Authorization"), request.args.to_dict())


def principal() -> Principal:
    return g.get("principal", ANONYMOUS_PRINCIPAL)


def current_account() -> str:
    """The account a request acts for (and is charged to); ``anonymous`` without credentials."""
    return principal().account


def authorize(rule: str) -> Callable[[F], F]:
    """The one access check of a view, before its arguments are parsed.

    ``admin``: admins only. ``authenticated``: any bearer token. ``manage-bucket``: the owner of the
    bucket in the URL, or an admin. ``public``: anyone; the service decides (downloads check the
    bucket they resolve, with no extra query).
    """
    if rule not in ("admin", "authenticated", "manage-bucket", "public"):
        raise ValueError(f"unknown access rule {rule!r}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            who = principal()
            policy = services().access_policy()
            if rule == "admin":
                policy.require_admin(who, f"{request.method} {request.path}")
            elif rule == "authenticated":
                policy.require_authenticated(who)
            elif rule == "manage-bucket":
                services().permission_service().require_manage(who, kwargs["bucket"])
            return view(*args, **kwargs)

        checked.__access_rule__ = rule
        return checked

    return decorate


def problems(*statuses: int) -> Callable[[F], F]:
    """Declare the error statuses a view gives besides those every route of its kind shares.

    Shared (added by ``storage_core.openapi``, never declared): 400 on every route; 401, 403 and 503 on
    every route but the open endpoints; 413 and 415 on routes taking a JSON body. Declare the rest, for
    example ``@problems(404, 409)``, below ``@blp.route``; every view declares, even nothing (``@problems()``).
    Each status becomes an ``application/problem+json`` response of the OpenAPI document.
    """
    from storage_core.openapi import PROBLEMS

    unknown = sorted(set(statuses) - set(PROBLEMS))
    if unknown:
        raise ValueError(f"no problem response is defined for status(es) {unknown} (storage_core/openapi.py)")

    def decorate(view: F) -> F:
        view.__problems__ = frozenset(statuses) | getattr(view, "__problems__", frozenset())
        return view

    return decorate


def problem(status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None,
            extra: dict[str, Any] | None = None) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code,
            **(extra or {})}
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        if name.lower() not in ("content-type", "content-length", "content-disposition"):
            response.headers[name] = value
    return response


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            # webargs nests by location ("json", "query"); the location is noise to a client
            name = "" if key in ("json", "query", "form", "headers", "view_args") and not prefix else str(key)
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
        return out
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            return [f"{prefix}: {' '.join(messages)}" if prefix else " ".join(messages)]
        out = []
        for item in messages:
            out += _flatten(item, prefix)
        return out
    return [f"{prefix}: {messages}" if prefix else str(messages)]


def handle_storage_error(exc: StorageError) -> Response:
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.detail)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="storage"')
    return problem(exc.status, exc.code, exc.title, exc.detail, headers, exc.extra)


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    if isinstance(exc, MethodNotAllowed) and profiles.STORAGE not in current_app.extensions["profiles"]:
        # the route exists only for other methods here; the storage-only methods are absent, not forbidden
        return problem(404, "NotFound", "Not found", f"{request.method} {request.path} is not served by the "
                       "downloader profile")
    data = getattr(exc, "data", None) or {}
    if "messages" in data:  # webargs / marshmallow validation (smorest answers 422; the contract says 400)
        detail = "; ".join(_flatten(data["messages"])) or "invalid request"
        return problem(400, "InvalidArgument", "Invalid argument", detail)
    headers = dict(exc.get_headers()) if status == 405 else {}
    return problem(status, HTTP_CODES.get(status, exc.name.replace(" ", "")), exc.name,
                   exc.description or exc.name, {k: v for k, v in headers.items() if k == "Allow"})


def handle_validation_error(exc: ValidationError) -> Response:
    return problem(400, "InvalidArgument", "Invalid argument", "; ".join(_flatten(exc.messages)))


def handle_database_error(exc: Exception) -> Response:
    if is_disconnect(exc):
        log.warning("database unavailable: %s", exc.orig)
        return problem(503, "DatabaseUnavailable", "Database unavailable", "the database cannot be reached",
                       {"Retry-After": "1"})
    return handle_unexpected(exc)


def handle_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "InternalError", "Internal error", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: Flask) -> None:
    """The one place domain and framework errors become ``application/problem+json``."""
    app.register_error_handler(StorageError, handle_storage_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(PoolTimeout, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
