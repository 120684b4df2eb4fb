"""Live servers of the suite: the app on a werkzeug socket, and the real service under gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

import profiles
from storage_core.settings import Settings
from tests.support.auth import AuthActions

ACTIVE = profiles.active_profiles([profiles.STORAGE])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The app on a real socket (werkzeug's threaded server), for tests of what crosses the wire."""

    def __init__(self, app: Any):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


class GunicornServer:
    """The real service: gunicorn with gevent workers, started from the bootstrap of the active profile.

    It checks tokens with the settings' secret (or runs without authentication when the settings say
    so); ``admin`` holds the headers of an admin token for it.
    """

    def __init__(self, settings: Settings, workers: int = 3, extra_env: dict[str, str] | None = None,
                 bootstrap: str | None = None, s3: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # s3: the same processes also serve the S3 API on a second listener (STORAGE_S3_BIND)
        self.s3_port = free_port() if s3 else None
        self.s3_url = f"http://127.0.0.1:{self.s3_port}" if s3 else None
        bootstrap = bootstrap or ("bootstrap_storage" if profiles.STORAGE in ACTIVE else "bootstrap_downloader")
        auth = ({"STORAGE_AUTH_DISABLED": "1"} if settings.auth_disabled
                else {"STORAGE_JWT_SECRET": settings.jwt_secret})
        env = {**os.environ, "STORAGE_DATABASE_URL": settings.database_url, "STORAGE_DATA_DIR": settings.data_dir,
               "STORAGE_BIND": f"127.0.0.1:{self.port}", "STORAGE_WORKERS": str(workers),
               "STORAGE_LOG_LEVEL": "WARNING", **auth,
               # several servers share the machine's PostgreSQL (max_connections 100) in one test
               "STORAGE_DB_POOL_SIZE": "4",
               **({"STORAGE_S3_BIND": f"127.0.0.1:{self.s3_port}"} if s3 else {}), **(extra_env or {})}
        self.admin = AuthActions(settings).headers("admin", ["admin"]) if not settings.auth_disabled else {}
        self.log = Path(settings.data_dir).parent / f"gunicorn-{self.port}.log"
        self.log_file = self.log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", bootstrap], env=env, stdout=self.log_file,
                                        stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/health/live", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # workers still booting
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except Exception:
            self.process.kill()
        self.log_file.close()
