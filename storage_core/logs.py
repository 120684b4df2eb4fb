"""Structured logs: one JSON object per line, the request id on every record, one access line per request."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import time
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# what a client may choose as its request id; anything else is replaced (it ends up in logs and headers)
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# the HTTP access log: one line per request (authorisation is services/permissions.py)
ACCESS_LOG = logging.getLogger("storage_core.accesslog")

# LogRecord attributes that are not "extra" fields
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}


def request_id_from(header: str | None) -> str:
    # 128 random bits as 32 hex digits, as uuid4().hex looked, without building a UUID per request
    return header if header and VALID_REQUEST_ID.match(header) else os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for gunicorn (``logconfig_dict``) and the CLI: JSON lines on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"],
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }


_COUNTED: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def account_when_sent(response: Any, *, route: str, method: str, path: str, started: float | None,
                      account: str | None, request_id: str | None) -> None:
    """Count the request (metrics) and write its access line when its body is done (or abandoned): the one
    access log of every door. ``path`` without its query, so presigned signatures stay out of the logs."""
    from storage_core.metrics import REQUEST_LATENCY, REQUESTS

    status, body = response.status_code, response.response

    def done() -> None:
        elapsed = time.perf_counter() - started if started else 0.0
        counted = _COUNTED.get((route, method, status))
        if counted is None:  # a label lookup per request showed in profiles; routes and statuses are few
            counted = _COUNTED[(route, method, status)] = (REQUESTS.labels(route, str(status)),
                                                           REQUEST_LATENCY.labels(route, method))
        counted[0].inc()
        counted[1].observe(elapsed)
        if not ACCESS_LOG.isEnabledFor(logging.INFO):
            return
        ACCESS_LOG.info("%s %s %d", method, path, status, extra={
            "request_id": request_id, "method": method, "path": path, "route": route, "status": status,
            "duration_ms": round(elapsed * 1000, 2), "account": account,
            "content_bytes": getattr(body, "delivered", None),
        })

    response.call_on_close(done)
