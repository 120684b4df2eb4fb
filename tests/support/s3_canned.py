"""A real HTTP server that answers every request with the next canned S3 response, and keeps what it received.

The XML builders are tested by what real clients (boto3, the minio SDK) make of them over real HTTP,
and the request parsers by the bodies those clients really send.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CannedS3:
    """``answer(body, status, headers)`` queues the next response; ``received`` lists the requests."""

    url: str = ""
    responses: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def answer(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.responses.append((status, {"Content-Type": "application/xml", **(headers or {})}, body))


def _handler(canned: CannedS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            canned.received.append(Received(self.command, self.path, dict(self.headers.items()), body))
            status, headers, payload = canned.responses.pop(0) if canned.responses else (200, {}, b"")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve() -> Iterator[CannedS3]:
    """A CannedS3 listening on 127.0.0.1 for the duration of the block."""
    canned = CannedS3()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(canned))
    canned.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield canned
    finally:
        server.shutdown()
        server.server_close()
