"""The client's HTTP side: one pooled httpx client, the API's paths, and problems turned into ``ApiError``."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

API = "/api/v1"
RETRY_STATUSES = frozenset({502, 503, 504})
TRANSIENT = (httpx.TransportError,)


class ApiError(Exception):
    """A failed operation: the problem's ``detail`` is what a person reads."""

    def __init__(self, detail: str, status: int = 0, code: str = "", headers: httpx.Headers | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.headers = headers or httpx.Headers()


def problem_of(response: httpx.Response) -> ApiError:
    """The problem+json of a failed answer (a HEAD has no body: then its status line)."""
    detail, code = "", ""
    try:
        body = json.loads(response.read() or b"{}")
        if isinstance(body, dict):
            detail, code = str(body.get("detail") or body.get("title") or ""), str(body.get("code") or "")
    except (ValueError, httpx.HTTPError):
        pass
    if not detail:
        detail = f"{response.status_code} {response.reason_phrase}".strip()
    if response.status_code == 429 and response.headers.get("Retry-After"):
        detail += f" (retry after {response.headers['Retry-After']} s)"
    return ApiError(detail, response.status_code, code, response.headers)


def bucket_path(bucket: str) -> str:
    return f"{API}/buckets/{urllib.parse.quote(bucket, safe='')}"


def object_path(bucket: str, key: str) -> str:
    # "/" stays a separator; everything else (including "%", "?" and "#") is escaped
    return f"{bucket_path(bucket)}/objects/{urllib.parse.quote(key, safe='/')}"


class Api:
    """The service's public API over one connection pool shared by every thread of a transfer."""

    def __init__(self, url: str, token: str | None, connections: int = 8, timeout: float = 60.0):
        headers = {"User-Agent": "storage-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        self.http = httpx.Client(
            base_url=url, headers=headers, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, attempts: int = 3, **kwargs: Any) -> httpx.Response:
        """One call; a dropped connection or a 502/503/504 is tried again (idempotent calls only)."""
        for attempt in range(1, attempts + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except TRANSIENT as exc:
                if attempt == attempts:
                    raise ApiError(f"cannot reach {self.url}: {exc}") from None
                time.sleep(0.5 * attempt)
                continue
            if response.status_code in RETRY_STATUSES and attempt < attempts and "Retry-After" not in response.headers:
                time.sleep(0.5 * attempt)
                continue
            if response.status_code >= 400:
                raise problem_of(response)
            return response
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer; a failed one raises its problem before any byte is handed out."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    raise problem_of(response)
                yield response
        except TRANSIENT as exc:
            raise TransferBroken(str(exc)) from exc


class TransferBroken(Exception):
    """The connection dropped in the middle of a body: what was received is kept, the rest is asked again."""
