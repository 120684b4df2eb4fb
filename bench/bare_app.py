"""The floor of a Flask app on gunicorn gevent: one file sent with ``send_file``, and one range view.

The throughput benchmark serves the same objects with this app (same gunicorn worker class, worker
count and worker_connections as the downloader) to tell the framework's and gunicorn's cost apart
from the downloader's own work (resolution, quota charge, read record, verified read):

- ``/small.bin``: the 4 KiB object with ``send_file``;
- ``/range.bin``: the least a Flask view does to serve one range of the big object: parse
  ``bytes=a-b``, open the file, seek, read, answer 206 with ``Content-Range`` (no verification, no
  charge);

    BENCH_BARE_FILE=/path/to/small.bin BENCH_BARE_RANGE_FILE=/path/to/big.bin \\
        gunicorn -k gevent -w 2 --worker-connections 1000 -b 127.0.0.1:PORT bench.bare_app:app
"""

from __future__ import annotations

import os
import re

from flask import Flask, Response, request, send_file

FILE = os.environ.get("BENCH_BARE_FILE", "small.bin")
RANGE_FILE = os.environ.get("BENCH_BARE_RANGE_FILE", "big.bin")
RANGE = re.compile(r"bytes=(\d+)-(\d+)$")

app = Flask(__name__)


@app.get("/small.bin")
def small() -> Response:
    return send_file(FILE, mimetype="application/octet-stream")


@app.get("/range.bin")
def ranged() -> Response:
    size = os.path.getsize(RANGE_FILE)
    match = RANGE.match(request.headers.get("Range", ""))
    if match is None:  # the benchmark always asks for one range; anything else is the whole file
        return send_file(RANGE_FILE, mimetype="application/octet-stream")
    start, last = int(match.group(1)), min(int(match.group(2)), size - 1)
    if start > last:
        return Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    with open(RANGE_FILE, "rb") as file:
        file.seek(start)
        data = file.read(last - start + 1)
    return Response(data, status=206, mimetype="application/octet-stream",
                    headers={"Content-Range": f"bytes {start}-{last}/{size}", "Accept-Ranges": "bytes"})


@app.get("/health")
def health() -> str:
    return "ok"
