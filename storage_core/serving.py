"""Running the service under gunicorn with gevent workers: shared by both bootstraps."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import glogging, util
from gunicorn.http import wsgi
from gunicorn.workers import ggevent

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


# gunicorn's own answers (it refuses these requests before the app sees them): stable codes as the app's
GUNICORN_CODES = {400: "InvalidArgument", 403: "Forbidden", 414: "URITooLong", 417: "ExpectationFailed",
                  431: "RequestHeaderFieldsTooLarge", 500: "InternalError", 501: "NotImplemented"}


def write_problem(sock: Any, status: int, reason: str, message: str) -> None:
    """``gunicorn.util.write_error`` as problem+json: a request line over ``limit_request_line`` (414), a
    header field over ``limit_request_field_size`` or too many fields (431), a malformed request (400).
    On the S3 listener the same refusal is S3's ``<Error>`` XML, as every answer there."""
    if _on_s3_listener(sock):
        from storage_core.s3.errors import S3Error
        from storage_core.s3.xml import error

        code = S3_CODES.get(status, "InvalidRequest")
        content_type, body = "application/xml", error(S3Error(code, message, status=status), resource="",
                                                      request_id="")
        if code == "RequestHeaderSectionTooLarge":  # what S3 answers
            status, reason = 400, "Bad Request"
    else:
        content_type = "application/problem+json"
        body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": message,
                           "code": GUNICORN_CODES.get(status, reason.replace(" ", ""))}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


S3_CODES = {400: "InvalidRequest", 414: "KeyTooLongError", 431: "RequestHeaderSectionTooLarge",
            500: "InternalError", 501: "NotImplemented"}
# (host or None, port) of the S3 listener in this worker; set by GeventWorker.init_process
_S3_LISTENER: tuple[str | None, int] | None = None


def _on_s3_listener(sock: Any) -> bool:
    if _S3_LISTENER is None:
        return False
    try:
        local = sock.getsockname()
    except OSError:
        return False
    host, port = _S3_LISTENER
    return isinstance(local, tuple) and local[1] == port and (host is None or local[0] == host)


class CoalescedResponse(wsgi.Response):
    """gunicorn's HTTP/1.x response, whose status line and headers leave in one send with the first body
    bytes instead of a send of their own: on loopback every send also runs the receiver's TCP path, and
    a 4 KiB read or a 64 KiB range is then one send, not two. Chunked bodies keep gunicorn's framing."""

    _head = b""

    def send_headers(self) -> None:
        if self.headers_sent or self.chunked:
            super().send_headers()
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._head = util.to_bytestring("".join(lines) + "\r\n", "latin-1")
        self.headers_sent = True

    def _emit_body(self, data: bytes) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        super()._emit_body(data)

    def _flush_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            util.write(self.sock, head)

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn's own sendfile writes to the socket itself once the headers are "sent"
        self.send_headers()
        self._flush_head()
        return super().sendfile(respiter)

    def close(self) -> None:
        super().close()
        self._flush_head()  # a response without body bytes (HEAD, 304, an empty file)


class GeventWorker(ggevent.GeventWorker):
    """gunicorn's gevent worker, whose own error answers are problem+json like every answer of the app
    (S3 XML on the S3 listener): gunicorn writes them as HTML through ``util.write_error``, looked up at
    each use, replaced here, in the worker process only; and whose responses are ``CoalescedResponse``."""

    def init_process(self) -> None:
        global _S3_LISTENER
        settings = Settings.from_env()
        if settings.s3_bind:
            host, _, port = settings.s3_bind.rpartition(":")
            # as storage_core.app.Listeners: the address tells them apart only when both share a port
            same_port = settings.bind.rpartition(":")[2] == port
            _S3_LISTENER = (host.strip("[]") if same_port else None, int(port))
        util.write_error = write_problem
        wsgi.Response = CoalescedResponse  # looked up by wsgi.create for every HTTP/1.x request
        super().init_process()


def gunicorn_options(settings: Settings) -> dict[str, object]:
    """The gunicorn settings of both bootstraps, every figure from ``Settings``."""
    return {
        # the S3 API listens on a second address served by the same workers (storage_core.app.Listeners)
        "bind": [settings.bind, settings.s3_bind] if settings.s3_bind else settings.bind,
        "workers": settings.workers,
        "worker_class": "storage_core.serving.GeventWorker",
        "worker_connections": settings.worker_connections,
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": 5,
        "accesslog": None,  # the app writes one JSON access line per request (logs.ACCESS_LOG)
        "logger_class": "storage_core.serving.GunicornLogger",
        "loglevel": settings.log_level.lower(),
        "logconfig_dict": logging_config(settings.log_level),
        # big uploads and downloads are streamed; never buffer request lines beyond the defaults. A key
        # (1024 bytes, 3072 percent-encoded) fits the request line; a header field holds 8190 bytes, well over
        # the 100 ranges a Range header may name. Over these gunicorn answers itself (write_problem).
        "limit_request_line": 8190,
        "limit_request_field_size": 8190,
        "limit_request_fields": 100,
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
    # The app's own objects (modules, mappers, schemas, routes: a few hundred thousand) live as long as the
    # worker: frozen, the collector stops walking them at every full collection, a few per cent of a worker's
    # CPU on small downloads (perf). What requests allocate later is collected as before.
    gc.freeze()


def worker_exit(_server: object, worker: Any) -> None:
    """A worker stops: its loops hand their jobs back at once instead of letting their leases expire."""
    from storage_core.workers import stop_for_app

    stop_for_app(getattr(worker, "wsgi", None))


def open_files_needed(settings: Settings) -> int:
    """File descriptors a worker may need: per connection its socket and, while a download sends a block in
    chunks, the piece file (services/reader.py), plus the pool, logs and listeners."""
    return 2 * settings.worker_connections + settings.db_pool_size + 64


def raise_open_files_limit(settings: Settings) -> None:
    """Raise the soft RLIMIT_NOFILE (inherited by the workers) to what ``STORAGE_WORKER_CONNECTIONS`` needs,
    as far as the hard limit allows; say so when it does not (the kernel would refuse connections with
    EMFILE, "Too many open files", long before the worker is full)."""
    import resource

    needed = open_files_needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        logging.getLogger(__name__).warning(
            "open files limit (RLIMIT_NOFILE) is %d, hard limit %d: STORAGE_WORKER_CONNECTIONS=%d needs %d per "
            "worker; raise the hard limit (systemd LimitNOFILE=, docker --ulimit nofile=)", target, hard,
            settings.worker_connections, needed)


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
    raise_open_files_limit(settings)
    from gunicorn.app.wsgiapp import run as gunicorn_run

    sys.argv = ["gunicorn", "--config", str(config_file), f"{bootstrap}.wsgi:app"]
    gunicorn_run()
