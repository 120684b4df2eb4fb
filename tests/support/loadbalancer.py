"""A real nginx in front of several service instances (the load balancer of docs/deployment.md).

nginx is Debian's package, installed with apt-get when missing (``tools.debian_tool``), and runs
from a directory of its own (configuration, pid, logs, temporary files) on a free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.support.servers import free_port
from tests.support.tools import debian_tool

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def upstream_config(name: str, servers: list[str]) -> str:
    """The ``upstream`` block and the ``location`` that proxies to it, as docs/deployment.md gives them.

    - round robin over the instances; an instance that refuses a connection (stopped, restarting) is
      skipped for ``fail_timeout`` after ``max_fails`` failures;
    - ``proxy_next_upstream error timeout``: a request whose connection fails before a response header
      arrives goes to the next instance (nginx never retries a request that is not idempotent, so an
      upload is never sent twice; a download that was charged on the failed instance is refunded there,
      as any download cut before its body is);
    - keep-alive connections to the instances (HTTP/1.1, no ``Connection: close``), closed by nginx after 4 s
      idle, before gunicorn closes them after its 5 (``keepalive``, storage_core/serving.py): nginx never
      sends a request on a connection the instance is closing;
    - bodies stream through (no buffering): a download is never spooled to nginx's disk, and the
      service sees a slow client as it is (``STORAGE_SEND_TIMEOUT``).
    """
    members = "\n".join(f"        server {server} max_fails=1 fail_timeout=10s;" for server in servers)
    return f"""    upstream {name} {{
{members}
        keepalive 32;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{{port}};
        client_max_body_size 0;
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
    }}
"""


def nginx_binary() -> str:
    return shutil.which("nginx") or shutil.which("nginx", path=SBIN) or debian_tool("nginx")


class Nginx:
    """nginx balancing ``servers`` (``host:port``), on ``url``; ``stop()`` ends it."""

    def __init__(self, root: Path, servers: list[str]):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # as root, nginx's workers would switch to "nobody" and could not use the private temporary directory
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(f"    {kind}_temp_path {root / ('tmp-' + kind)};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.config = root / "nginx.conf"
        self.config.write_text(
            f"{user}worker_processes 1;\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} warn;\n"
            f"events {{\n    worker_connections 1024;\n}}\nhttp {{\n"
            f"    log_format upstreams '$request_uri $status $upstream_addr';\n"
            f"    access_log {root / 'access.log'} upstreams;\n"
            f"{temp}\n" + upstream_config("downloaders", servers).replace("{port}", str(self.port)) + "}\n")
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(root), "-e", str(root / "error.log"), "-c", str(self.config),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode(errors='replace')}"
                                   f"{self.error_log()}")
            try:
                if requests.get(self.url + "/health/live", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer on {self.url}: {self.error_log()}")

    def served_by(self) -> list[tuple[str, int, list[str]]]:
        """(URI, status, the instances tried in turn) of every request logged so far."""
        path = self.root / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(uri, int(status), [a.strip() for a in tried.split(",")])
                for uri, status, tried in (line.split(" ", 2) for line in lines)]

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: open requests finish
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pgbouncer_binary() -> str:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path=SBIN) or debian_tool("pgbouncer")


class PgBouncer:
    """PgBouncer (Debian's package) in front of the suite's PostgreSQL, on ``port``, in ``pool_mode``.

    ``url_for(database_url)`` is the same database reached through it. The server connections it keeps per
    database and user are ``pool_size``: fewer than the clients' pools, so clients really share them.
    ``connect_query`` runs on each new server connection (the service's timeouts, which PgBouncer does not
    pass on from the client's startup ``options``).
    """

    def __init__(self, server_host: str = "127.0.0.1", server_port: int = 5432, pool_mode: str = "transaction",
                 pool_size: int = 10, user: str = "postgres", connect_query: str = ""):
        # PgBouncer refuses to run as root; as root it runs as nobody, who must reach its directory (not under
        # pytest's private temporary directories), read its files and write its log
        self.root = root = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        root.chmod(0o777)
        self.port = free_port()
        (root / "userlist.txt").write_text(f'"{user}" ""\n')
        self.config = root / "pgbouncer.ini"
        self.config.write_text(f"""[databases]
* = host={server_host} port={server_port}{f" connect_query='{connect_query}'" if connect_query else ""}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {root / 'userlist.txt'}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 1000
; libpq's "options" (the service's statement_timeout and lock_timeout) is not a parameter PgBouncer passes on
ignore_startup_parameters = options
logfile = {root / 'pgbouncer.log'}
pidfile = {root / 'pgbouncer.pid'}
""")
        for path in root.iterdir():
            path.chmod(0o666)
        argv = [pgbouncer_binary(), *(["-u", "nobody"] if os.geteuid() == 0 else []), str(self.config)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import socket

        deadline = time.time() + 15
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.process.stderr.read().decode(errors='replace')}"
                                   f"{self.log()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log()}")

    def url_for(self, database_url: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # safe shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
