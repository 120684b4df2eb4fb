"""What a download's client really received, and the cut of a client that stopped reading.

A charged body is handed to the server's socket a chunk at a time; how much of it the client took is
known to the kernel, not to the application. On Linux, ``TCP_INFO`` says how many bytes the peer
acknowledged (``tcpi_bytes_acked``) and ``SIOCOUTQ`` how many wait in the send queue, so:

- a body that ends early is refunded down to what the client's TCP stack acknowledged (what the
  client received), not only what was handed to the kernel;
- a client that acknowledges nothing for ``STORAGE_SEND_TIMEOUT`` seconds while data waits for it is
  cut (RST, so the queued bytes are dropped) by one watchdog per process, which makes the server's
  blocked write fail; the body's close then refunds the rest. An idle connection cannot hold a
  bucket's quota.

Elsewhere (no ``TCP_INFO``), the refund falls back to the chunks handed to the kernel, and the cut to
the server's own timeouts.

Under gunicorn's gevent worker on plain HTTP/1.x, a ``SocketSender`` lets a body hand verified spans of
piece files to the client socket with ``os.sendfile`` (the kernel copies from the page cache; nothing
passes through Python), between the chunks it yields to the server: the server has sent the status
line and headers by then, and the Content-Length it announced stays exact.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import termios
import threading
import time
from typing import Any

from storage_core.metrics import SENDFILE_BYTES

log = logging.getLogger(__name__)

# struct tcp_info (linux/tcp.h): __u64 tcpi_bytes_acked at offset 120 (Linux >= 4.1)
_TCP_INFO_LEN = 128
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_OFFSET = 120
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)
_LINGER_RESET = struct.pack("ii", 1, 0)


def _acked_and_queued(sock: socket.socket) -> tuple[int, int] | None:
    """(bytes the peer acknowledged since the connection opened, bytes in the send queue), or None."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        if len(info) < _BYTES_ACKED_OFFSET + 8:
            return None
        acked = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_OFFSET)[0]
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, AttributeError, ValueError):
        return None
    return acked, queued


class DeliveryWatch:
    """Follows one response body on its socket: where it starts in the connection's byte stream, the
    length of the server's header, and the framing bytes that are not content (multipart)."""

    def __init__(self, sock: socket.socket, send_timeout: float, watchdog: Watchdog):
        self._sock = sock
        self._timeout = send_timeout
        self._watchdog = watchdog
        self._start: int | None = None  # stream offset of this response's first byte (its status line)
        self._header: int | None = None  # bytes of status line and headers
        self._first_chunk = 0
        self._framing: list[tuple[int, int]] = []  # (body offset, length) of bytes that are not content
        self._last_acked = -1
        self._stalled_since: float | None = None
        self.cut = False

    # ---- called by the body as it goes -----------------------------------------------------------

    def before_first_chunk(self) -> None:
        """Nothing of this response is handed yet: everything handed so far belongs to earlier ones."""
        state = _acked_and_queued(self._sock)
        if state is None:
            return
        self._start = state[0] + state[1]
        self._watchdog.add(self)

    def after_first_chunk(self, length: int) -> None:
        """The header and the first chunk are handed: their sum gives the header's length."""
        if self._start is None:
            return
        state = _acked_and_queued(self._sock)
        if state is not None:
            self._header = state[0] + state[1] - self._start - length

    def framing(self, body_offset: int, length: int) -> None:
        self._framing.append((body_offset, length))

    def received_content(self) -> int | None:
        """Content bytes the client acknowledged, or None when the platform cannot tell."""
        if self._start is None or self._header is None:
            return None
        state = _acked_and_queued(self._sock)
        if state is None:
            return None
        body = max(0, state[0] - self._start - self._header)
        framing = sum(max(0, min(length, body - offset)) for offset, length in self._framing)
        return body - framing

    def done(self) -> None:
        self._watchdog.discard(self)

    # ---- called by the watchdog --------------------------------------------------------------------

    def check(self, now: float) -> None:
        state = _acked_and_queued(self._sock)
        if state is None:
            self._watchdog.discard(self)
            return
        acked, queued = state
        if queued == 0 or acked != self._last_acked:  # progress, or nothing waiting for the client
            self._last_acked = acked
            self._stalled_since = None
            return
        if self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since >= self._timeout:
            self._cut()

    def _cut(self) -> None:
        log.info("cutting a download whose client read nothing for %g s", self._timeout)
        self.cut = True
        self._watchdog.discard(self)
        try:
            # RST on close: the bytes waiting in the send queue are dropped, never delivered for free
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Watchdog:
    """One per process: looks at every watched download once a second (a thread; a greenlet under gevent)."""

    def __init__(self, interval: float = 1.0):
        self._interval = interval
        self._watches: set[DeliveryWatch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: DeliveryWatch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="delivery-watchdog", daemon=True)
                self._thread.start()

    def discard(self, watch: DeliveryWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                watches = list(self._watches)
            now = time.monotonic()
            for watch in watches:
                try:
                    watch.check(now)
                except Exception:  # one bad socket must not stop the others being watched
                    log.exception("delivery watch failed")
                    self.discard(watch)


WATCHDOG = Watchdog()


def watch_socket(environ: dict[str, Any], send_timeout: float) -> DeliveryWatch | None:
    """A watch on the client socket of a WSGI request (gunicorn's or werkzeug's), if it has one."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    return DeliveryWatch(sock, send_timeout, WATCHDOG)


class SocketSender:
    """Hands bytes of open files to one client socket with ``os.sendfile``; a full send buffer waits in
    the gevent hub (the socket is non-blocking), so other greenlets run meanwhile. ``sent`` counts what
    the kernel took, also when a send fails half-way (a client that went away, or a watchdog cut)."""

    def __init__(self, sock: Any, wait_write: Any):
        self._fd = sock.fileno()
        self._wait_write = wait_write
        self.sent = 0

    def send_file(self, fd: int, offset: int, count: int) -> None:
        out, sent = self._fd, 0
        try:
            while sent < count:
                try:
                    done = os.sendfile(out, fd, offset + sent, count - sent)
                except BlockingIOError:
                    self._wait_write(out)
                    continue
                if not done:  # the file ended early: a piece shrank under us (its size was checked before)
                    raise OSError(f"sendfile sent nothing with {count - sent} bytes left")
                sent += done
        finally:
            self.sent += sent

    def close(self) -> None:
        """Count what was sent in ``storage_bytes_sendfile_total`` (once per body: a metric update per
        window showed in profiles)."""
        if self.sent:
            SENDFILE_BYTES.inc(self.sent)
            self.sent = 0


def socket_sender(environ: dict[str, Any]) -> SocketSender | None:
    """A sender on the client socket of a request served by gunicorn's gevent worker over plain HTTP/1.x,
    or None (another server, TLS, HTTP/2: the body is then sent as bytes through the server)."""
    sock = environ.get("gunicorn.socket")
    if (sock is None or not environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1")
            or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6)
            or hasattr(sock, "do_handshake") or not type(sock).__module__.startswith("gevent")):
        return None
    from gevent.socket import wait_write

    return SocketSender(sock, wait_write)
