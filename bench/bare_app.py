"""The floor of a Flask app on gunicorn gevent: one route sending one file with ``send_file``.

The throughput benchmark serves the same 4 KiB object with this app (same gunicorn worker class,
worker count and worker_connections as the downloader) to tell the framework's and gunicorn's cost
apart from the downloader's own work (resolution, quota charge, read record, verified read):

    BENCH_BARE_FILE=/path/to/small.bin gunicorn -k gevent -w 2 --worker-connections 1000 \\
        -b 127.0.0.1:PORT bench.bare_app:app
"""

from __future__ import annotations

import os

from flask import Flask, Response, send_file

FILE = os.environ.get("BENCH_BARE_FILE", "small.bin")

app = Flask(__name__)


@app.get("/small.bin")
def small() -> Response:
    return send_file(FILE, mimetype="application/octet-stream")


@app.get("/health")
def health() -> str:
    return "ok"
