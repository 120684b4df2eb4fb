"""Helpers of the fault tests: a private PostgreSQL, an S3 server that can die, processes, raw HTTP.

Everything here listens on loopback only and is stopped by the test that starts it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage_core.models import BucketTraffic, ReadRecord
from tests.support.servers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


# ---- a private PostgreSQL server -------------------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, on its own port, for one test.

    initdb and postgres refuse to run as root, so they run as the ``postgres`` system user
    (``runuser``) when the test runs as root. The unix socket lives in the temporary directory, TCP
    listens on 127.0.0.1 only. ``stop()`` / ``start()`` simulate a database restart; ``destroy()``
    stops it for good and removes everything.
    """

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}")
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-locale",
                  "-E", "UTF8", "--no-sync", timeout=120)
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        command = [str(PG_BIN / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}\n{done.stderr}\n{self.log_tail()}")
        return done.stdout

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [postmaster, *sorted(child_pids(postmaster))]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every postgres process stopped (SIGSTOP): sockets stay open, nothing answers. Thawed on exit."""
        pids = self.pids()
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


# ---- an S3 server that can be stopped hard ----------------------------------------------------------


class KillableMotoServer:
    """A ThreadedMotoServer of its own whose ``kill()`` behaves like a dead S3 process.

    ``ThreadedMotoServer.stop()`` only ends the accept loop: the listening socket stays open (new
    connections hang in the backlog instead of being refused) and keep-alive connections already
    accepted go on being served by their handler threads. ``kill()`` also closes the listening
    socket and shuts down every accepted connection, so clients see refused connections and broken
    reads, as when the server process dies.
    """

    def __init__(self, port: int = 0):
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        server = self._moto._server
        assert server is not None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        accept = server.get_request

        def get_request() -> tuple[socket.socket, Any]:
            conn, address = accept()
            with self._lock:
                self._connections.append(conn)
            return conn, address

        # serve_forever looks the method up on each accept; none has happened yet
        server.get_request = get_request
        self.host, self.port = self._moto.get_host_and_port()
        self.endpoint = f"{self.host}:{self.port}"
        self.alive = True

    def config(self, bucket: str) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "access_key": "testing", "secret_key": "testing", "bucket": bucket,
                "secure": False, "region": "us-east-1", "create_bucket": True}

    def kill(self) -> None:
        if not self.alive:
            return
        self.alive = False
        server = self._moto._server
        assert server is not None
        self._moto.stop()
        server.server_close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# ---- processes ------------------------------------------------------------------------------------


def child_pids(pid: int) -> set[int]:
    """The direct children of a process (gunicorn master -> its workers)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children.update(int(c) for c in (task / "children").read_text().split())
    return children


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; that value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# ---- raw HTTP ------------------------------------------------------------------------------------


def read_head(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Read a response head from a raw socket: (status, headers in lower case, body bytes already read)."""
    sock.settimeout(timeout)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before the response head: {buffer!r}")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def read_until_closed(sock: socket.socket, limit: int, timeout: float = 30) -> bytes:
    """Read until the peer closes, an error, or ``limit`` bytes."""
    sock.settimeout(timeout)
    chunks = []
    received = 0
    while received < limit:
        try:
            chunk = sock.recv(min(65536, limit - received))
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


# ---- database figures -----------------------------------------------------------------------------


def read_sizes(session_factory: sessionmaker[Session]) -> list[int]:
    with session_factory() as session:
        return list(session.scalars(select(ReadRecord.read_size).order_by(ReadRecord.id)))


def consumption(session_factory: sessionmaker[Session]) -> tuple[int, int, int]:
    """(charged, monthly free, one-time free) consumed, summed over every bucket and month."""
    with session_factory() as session:
        row = session.execute(select(
            func.coalesce(func.sum(BucketTraffic.charged_consumed_size), 0),
            func.coalesce(func.sum(BucketTraffic.monthly_free_consumed_size), 0),
            func.coalesce(func.sum(BucketTraffic.free_consumed_size), 0),
        )).one()
    return int(row[0]), int(row[1]), int(row[2])


def files_under(root: Path) -> list[Path]:
    """Every regular file under ``root`` (pieces, temporary piece files, spool files), sorted."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file())


@contextlib.contextmanager
def running(servers: list[Any]) -> Iterator[list[Any]]:
    """Stop every server (anything with ``stop()``) on the way out, whatever happened."""
    try:
        yield servers
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
