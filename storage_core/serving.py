"""Running the service under gunicorn with gevent workers: shared by both bootstraps."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import glogging

from profiles import active_profiles
from storage_core.errors import ConfigurationError
from storage_core.logs import logging_config
from storage_core.settings import Settings


class GunicornLogger(glogging.Logger):
    """gunicorn's logger without its access log: the app writes its own JSON line per request.

    With a ``logconfig_dict`` gunicorn counts its access log as enabled and builds its atoms (every
    header and environ entry) for each request, only for a logger nobody reads: about 2 % of a worker's
    CPU on 4 KiB downloads.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def gunicorn_options(settings: Settings) -> dict[str, object]:
    """The gunicorn settings of both bootstraps, every figure from ``Settings``."""
    return {
        # the S3 API listens on a second address served by the same workers (storage_core.app.Listeners)
        "bind": [settings.bind, settings.s3_bind] if settings.s3_bind else settings.bind,
        "workers": settings.workers,
        "worker_class": "gevent",
        "worker_connections": settings.worker_connections,
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": 5,
        "accesslog": None,  # the app writes one JSON access line per request (logs.ACCESS_LOG)
        "logger_class": "storage_core.serving.GunicornLogger",
        "loglevel": settings.log_level.lower(),
        "logconfig_dict": logging_config(settings.log_level),
        # big uploads and downloads are streamed; never buffer request lines beyond the defaults
        "limit_request_line": 8190,
        # gunicorn >= 27 opens a control socket at one fixed path per user; several instances on a host
        # (two downloaders, tests, benchmarks) would fight over it, and nothing here uses it
        "control_socket_disable": True,
    }


def prepare_metrics_dir() -> str:
    """Prometheus multiprocess mode: every worker writes its samples to files in one directory.

    Must happen in the master before any worker imports prometheus_client.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="storage-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def child_exit(_server: object, worker: Any) -> None:
    """A worker died: drop its live gauges from the multiprocess metrics (counters are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def gevent_wait_callback(limit: float):
    """psycopg2's wait callback for gevent (as psycogreen's) with a bound on every wait.

    Under a wait callback libpq's own connect_timeout is not enforced, and a server that stopped
    answering (frozen, network partition) would hold a request forever. After ``limit`` seconds the
    connection is closed, so SQLAlchemy discards it, and the request fails closed with 503.
    """
    import psycopg2
    from gevent.socket import wait_read, wait_write
    from psycopg2 import extensions

    def wait(conn, timeout=None):
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            waiter = wait_read if state == extensions.POLL_READ else wait_write
            if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
                raise psycopg2.OperationalError(f"bad result from poll: {state!r}")
            try:
                waiter(conn.fileno(), timeout=limit)
            except TimeoutError:
                # Cut the socket first: libpq's own close would try to talk to the silent server and block
                # the whole worker. The message is one SQLAlchemy knows as a disconnect, so the
                # connection is discarded, not returned to the pool.
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                raise psycopg2.OperationalError(
                    f"could not receive data from server: no answer within {limit:g} s") from None

    return wait


def post_fork(_server: object, _worker: object) -> None:
    """In each worker: make psycopg2 yield to other greenlets while it waits for PostgreSQL, boundedly."""
    from psycopg2 import extensions

    settings = Settings.from_env()
    # with the server's statement and lock timeouts (db.make_engine), no database wait outlasts this
    extensions.set_wait_callback(gevent_wait_callback(settings.db_timeout))


def post_worker_init(worker: Any) -> None:
    """In each worker, once the app is loaded: its restore and webhook loops (storage profile,
    ``STORAGE_RESTORE_WORKERS``); greenlets, since the gevent worker has patched threading by then."""
    from storage_core.workers import start_for_app

    start_for_app(worker.wsgi)


def worker_exit(_server: object, worker: Any) -> None:
    """A worker stops: its loops hand their jobs back at once instead of letting their leases expire."""
    from storage_core.workers import stop_for_app

    stop_for_app(getattr(worker, "wsgi", None))


def run(bootstrap: str, default_profiles: tuple[str, ...], config_file: Path) -> None:
    """Start gunicorn on ``bootstrap``.wsgi:app with the bootstrap's own gunicorn.conf.py."""
    try:
        settings = Settings.from_env()
        # fail here, with one clear line, rather than in every worker with a traceback
        active_profiles(default_profiles)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=settings.log_level)
    from gunicorn.app.wsgiapp import run as gunicorn_run

    sys.argv = ["gunicorn", "--config", str(config_file), f"{bootstrap}.wsgi:app"]
    gunicorn_run()
