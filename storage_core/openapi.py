"""The OpenAPI document as clients meet the service: problem+json errors with each route's statuses, the
bearer security scheme, and no trace of flask-smorest's 422 ``Error``.

One apispec plugin, installed by the app factory, rewrites every operation smorest documents:

- smorest's ``default`` (its ``Error`` schema) and its 422 (the service answers 400) are removed;
- every error status the route can give is a reference to ``#/components/responses/Problem<status>``
  (``application/problem+json``, schema ``Problem``): the statuses every route shares (below, from its
  access rule and whether it takes a JSON body) and those its view declares with ``@problems(...)``
  (``blueprints/common.py``); a status the view documents itself (health's 503) is kept as it is;
- ``security``: none for the open endpoints (probes, metrics), a bearer token for the others (optional
  where anyone may read: ``@authorize("public")``).

So a new route gets the shared statuses by itself and declares only its own; ``tests/test_openapi.py``
fails for a view that declares nothing, and schemathesis (``tests/test_fuzz.py``) for a status it gives
but does not document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apispec import APISpec, BasePlugin
from flask import Flask

PROBLEM_JSON = "application/problem+json"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `code` is the stable machine-readable name of the error",
    "properties": {
        "type": {"type": "string", "example": "about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "example": "NotFound"},
    },
    "required": ["type", "title", "status", "detail", "code"],
}

RETRY_AFTER = {"Retry-After": {"description": "seconds after which the request may succeed",
                               "schema": {"type": "integer", "minimum": 0}}}

# every status a problem may have, with what it means here and the headers it carries
PROBLEMS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Bad input (path, query, headers or body): `InvalidArgument`, `BadDigest`", {}),
    401: ("Missing or invalid credentials: `Unauthorized`",
          {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}),
    403: ("Not allowed, or a presigned URL that is invalid, expired or revoked: `Forbidden`", {}),
    404: ("No such bucket, object, file, location or upload: `NotFound`", {}),
    409: ("Conflict with the current state (exists, not empty, ambiguous): `Conflict`; a file with only nearline "
          "copies while restores on read are off: `NotAvailable`", {}),
    411: ("A body with neither Content-Length nor chunked encoding: `MissingContentLength`", {}),
    412: ("If-Match or If-Unmodified-Since failed: `PreconditionFailed`", {}),
    413: ("Body over its limit (STORAGE_MAX_JSON_BYTES, STORAGE_MAX_UPLOAD_SIZE): `EntityTooLarge`", {}),
    415: ("A route taking JSON was sent something else: `UnsupportedMediaType`", {}),
    416: ("No range satisfiable, or more than 100 ranges: `InvalidRange`",
          {"Content-Range": {"description": "`bytes */SIZE`", "schema": {"type": "string"}}}),
    429: ("Read quota exhausted (`QuotaExceeded`, until the next UTC month) or an account's download limits "
          "(`ConcurrentDownloadLimit`, `MonthlyDownloadLimit`)", RETRY_AFTER),
    501: ("Not available on this service (`PresignUnavailable`: no URL signing secret)", {}),
    503: ("No copy can serve (`StorageUnavailable`), a nearline file is being restored (`RestoreInProgress`), "
          "or the database is unavailable (`DatabaseUnavailable`)", RETRY_AFTER),
    507: ("A target location has no room: `InsufficientStorage`", {}),
}

BEARER = "bearer"


def problem_response(status: int) -> str:
    return f"Problem{status}"


class ProblemsPlugin(BasePlugin):
    """Rewrites each operation as described in the module docstring."""

    def __init__(self, app: Flask, open_endpoints: frozenset[str], takes_json: Callable[[Any], bool]):
        self.app = app
        self.open_endpoints = open_endpoints
        self.takes_json = takes_json

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        spec.components.schema("Problem", component=PROBLEM_SCHEMA)
        for status, (description, headers) in PROBLEMS.items():
            spec.components.response(problem_response(status), {
                "description": description,
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                **({"headers": headers} if headers else {}),
            })
        spec.components.security_scheme(BEARER, {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "a JWT (claims `sub`, `roles`, `exp`) signed with the service's key"})

    def shared_statuses(self, endpoint: str, view: Any) -> set[int]:
        """The problems every route of its kind can give, whatever it declares."""
        statuses = {400}  # a path or query that is not UTF-8 or holds control characters, on any route
        if endpoint not in self.open_endpoints:
            statuses |= {401, 403, 503}  # a bad token or presigned URL; the database unavailable
        if self.takes_json(view):
            statuses |= {413, 415}
        return statuses

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        view = self.app.view_functions[rule.endpoint]
        declared = getattr(view, "__problems__", frozenset())
        access = getattr(view, "__access_rule__", None)
        for operation in operations.values():
            responses = {str(status): value for status, value in operation.get("responses", {}).items()}
            responses.pop("default", None)
            responses.pop("422", None)
            for status in sorted(self.shared_statuses(rule.endpoint, view) | declared):
                responses.setdefault(str(status), problem_response(status))
            operation["responses"] = responses
            if rule.endpoint in self.open_endpoints:
                operation["security"] = []
            elif access == "public":
                operation["security"] = [{}, {BEARER: []}]
            else:
                operation["security"] = [{BEARER: []}]


def drop_smorest_schemas(spec: APISpec) -> None:
    """smorest registers its ``Error`` and ``PaginationMetadata`` schemas eagerly; this API answers neither."""
    for name in ("Error", "PaginationMetadata"):
        spec.components.schemas.pop(name, None)
