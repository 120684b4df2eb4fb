"""A request body of known length read straight from gunicorn's socket into the caller's buffer.

gunicorn's ``wsgi.input`` returns bytes: each ``read`` of a large body gathers the socket's chunks in
its buffers (``Unreader``, then ``Body``) and slices them, about five copies of every byte and fresh
allocations of megabytes per call. An upload that reads into buffers it reuses (``Spool.receive``)
gets ``readinto`` here instead: what gunicorn already holds of the body first, then ``recv_into``
from the connection. gunicorn's own count of the body still to read goes down as it is read, so the
connection stays usable for the next request exactly as with its own reads.

Anything else (chunked bodies, another server, a body already partly read) keeps the WSGI stream.
"""

from __future__ import annotations

from typing import Any, BinaryIO


class SocketBody:
    """``readinto``/``read`` of a Content-Length body over gunicorn's ``LengthReader``."""

    zero_copy = True  # Spool.receive reads it into its reused buffers, in rounds of spool.CHUNK

    def __init__(self, body: Any):
        self._body = body  # gunicorn.http.body.Body
        self._reader = body.reader  # LengthReader: .length is what is left of the body
        self._unreader = body.reader.unreader  # SocketUnreader: .sock, and read-ahead it holds

    @property
    def remaining(self) -> int:
        return int(self._reader.length)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._reader.length)
        if want <= 0:
            return 0
        view = view[:want]
        try:
            held = self._unreader.take_buffered()
            if held:
                got = min(len(held), want)
                view[:got] = held[:got]
                if len(held) > got:  # the start of a pipelined next request: gunicorn's again
                    self._unreader.unread(held[got:])
            else:
                got = self._unreader.sock.recv_into(view)
        except BaseException:
            self._body.failed = True  # where the next request starts is unknown: gunicorn closes
            raise
        self._reader.length -= got
        return got

    def read(self, size: int = -1) -> bytes:
        want = self._reader.length if size is None or size < 0 else min(size, self._reader.length)
        buffer = bytearray(want)
        got = self.readinto(buffer)
        del buffer[got:]
        return bytes(buffer)


def body_stream(environ: dict[str, Any], stream: BinaryIO) -> BinaryIO | SocketBody:
    """``SocketBody`` over gunicorn's input when the request has a Content-Length body nothing has read
    yet, else ``stream`` (werkzeug's ``request.stream``)."""
    raw = environ.get("wsgi.input")
    try:
        from gunicorn.http.body import Body, LengthReader
        from gunicorn.http.unreader import SocketUnreader
    except ImportError:  # pragma: no cover - gunicorn is a dependency of the services
        return stream
    if (type(raw) is Body and type(raw.reader) is LengthReader and type(raw.reader.unreader) is SocketUnreader
            and raw.buf.tell() == 0 and str(raw.reader.length) == environ.get("CONTENT_LENGTH", "").strip()):
        return SocketBody(raw)
    return stream
