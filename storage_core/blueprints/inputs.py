"""What every request of the JSON door passes before its view: the raw path's encoding and control characters,
and the limits of JSON bodies (media type, size, nesting).

Installed once by the app factory (a before-request hook and the request class), so a new route gets the same
checks without declaring anything: a route takes a JSON body when it has ``@blp.arguments(Schema)`` (location
``json``, smorest's default).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Request, current_app, g, request

from storage_core.errors import InvalidArgument, PayloadTooLarge, StorageError

# RFC 8259 sets no limit; 32 levels is far beyond any body of this API and far below Python's recursion limit
MAX_JSON_DEPTH = 32


class UnsupportedMediaType(StorageError):
    status, code, title = 415, "UnsupportedMediaType", "Unsupported media type"


def _raw_target() -> str | None:
    """The request target as the client sent it (still percent-encoded): gunicorn's ``RAW_URI``, the
    ``REQUEST_URI`` of werkzeug's servers and test client. ``PATH_INFO`` is decoded already, and werkzeug
    decodes it once more with replacement characters, so ``%ff`` and ``%fe`` would both become U+FFFD."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        return None
    if not raw.startswith("/"):  # absolute form (a proxy's request line)
        parts = urlsplit(raw)
        raw = parts.path + (f"?{parts.query}" if parts.query else "")
    return raw


def _decoded(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"the {what} is not valid UTF-8 once percent-decoded (keys and names are UTF-8 text)"
                              ) from None


def check_request_target() -> None:
    """Before routing errors surface: a path or query that is not UTF-8, or a path holding control characters
    (they would end up in headers and logs), is 400 here, whatever the route."""
    raw = _raw_target()
    if raw is not None:
        path, _, query = raw.partition("?")
        path_bytes = unquote_to_bytes(path)
    else:  # a server that keeps no raw target: PATH_INFO holds the bytes as latin-1 (PEP 3333)
        path_bytes = request.environ.get("PATH_INFO", "").encode("latin-1", "replace")
        query = request.environ.get("QUERY_STRING", "")
    path = _decoded(path_bytes, "path")
    if query:
        _decoded(unquote_to_bytes(query.replace("+", " ")), "query string")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise InvalidArgument("the path must not contain control characters (object keys and names cannot hold them)")


def view_takes_json(view: Any) -> bool:
    """Whether a view parses a JSON body (smorest records ``@blp.arguments`` in the view's ``_apidoc``)."""
    parameters = getattr(view, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return any(p.get("in") == "json" for p in parameters)


def takes_json(endpoint: str | None) -> bool:
    if endpoint is None:
        return False
    known: dict[str, bool] = current_app.extensions.setdefault("json_endpoints", {})
    if endpoint not in known:
        known[endpoint] = view_takes_json(current_app.view_functions.get(endpoint))
    return known[endpoint]


def is_json_media_type(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def check_json_body() -> None:
    """A JSON route's body: JSON or nothing (415), at most ``STORAGE_MAX_JSON_BYTES`` (413, from the
    Content-Length before anything is read, or while a chunked body is read). Its nesting is checked
    when the view reads it (``JsonLimitedRequest``)."""
    if not takes_json(request.endpoint) or not has_body():
        return
    if not is_json_media_type(request.mimetype):
        sent = request.mimetype or "no Content-Type"
        raise UnsupportedMediaType(f"this route expects a JSON body (Content-Type: application/json), not {sent}")
    limit = current_app.extensions["container"].settings().max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"JSON bodies are at most {limit} bytes (STORAGE_MAX_JSON_BYTES); "
                              f"this one announces {request.content_length}")
    g.json_body_limit = limit  # a chunked body is cut there when it is read (JsonLimitedRequest)


def json_depth(value: Any) -> int:
    """Levels of arrays and objects in a parsed JSON value (iterative: the value may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def read_at_most(stream: Any, limit: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as it passes ``limit`` (never more than a read beyond it).

    werkzeug's own ``max_content_length`` stops a chunked body at the limit without saying it was longer."""
    body = bytearray()
    while len(body) <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
    raise PayloadTooLarge(f"JSON bodies are at most {limit} bytes (STORAGE_MAX_JSON_BYTES)")


class JsonLimitedRequest(Request):
    """The request class: the body of a JSON route is read at most to its limit, and refused when it is
    nested deeper than ``MAX_JSON_DEPTH``, as soon as the view reads it (webargs reads it with
    ``get_data``, after the access check), so that no parser recurses into it (``json.loads`` raises
    RecursionError, a 500, at about 1000 levels)."""

    _json_body: bytes | None = None

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> Any:
        limit = g.get("json_body_limit")
        if limit is None:
            return super().get_data(cache, as_text, parse_form_data)
        if self._json_body is None:
            body = read_at_most(self.stream, limit)
            check_json_depth(body)
            self._json_body = body
        return self._json_body.decode(errors="replace") if as_text else self._json_body

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        raise InvalidArgument(f"the body is not valid JSON: {e}")


def check_json_depth(body: bytes) -> None:
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise InvalidArgument(f"JSON bodies must not be nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        return  # not JSON at all: the parser's own 400 says so
    if json_depth(parsed) > MAX_JSON_DEPTH:
        raise InvalidArgument(f"JSON bodies must not be nested deeper than {MAX_JSON_DEPTH} levels")
