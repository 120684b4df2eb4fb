"""What every benchmark needs: a throw-away database and data directory, real service processes, /proc readings.

A ``Workspace`` is one temporary directory plus one fresh PostgreSQL database ``storage_bench_<random>``,
migrated, with a local location ``hot`` and a public-read bucket ``bench``; it is removed at the end
(on failure the service logs are kept and their path printed). ``Workspace.service()`` starts
``storage-service`` or ``downloader-service`` on a free loopback port with one gunicorn worker (or
``workers``) and stops it with SIGTERM; ``Service.memory()`` reads the worker's VmRSS and VmHWM.
``ChildProcess`` runs any other server (nginx, a reference gunicorn app) the same way.

Only the standard library, requests and psycopg2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import requests

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

# PostgreSQL server the benchmark databases are created on (trust auth, as for the tests).
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")

SERVICES = {"storage": "storage-service", "downloader": "downloader-service"}
BUCKET = "bench"
LOCATION = "hot"


class BenchError(RuntimeError):
    """A benchmark could not run as intended (service failed, unexpected answer, ...)."""


def bin_dir() -> Path:
    """The directory of the console scripts: the repository's .venv, else the running interpreter's."""
    venv = REPO / ".venv" / "bin"
    return venv if (venv / "storage-admin").exists() else Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fmt_mib(n_bytes: float) -> str:
    return f"{n_bytes / MiB:.1f} MiB"


# --------------------------------------------------------------------------------------------- database


class Database:
    """A fresh PostgreSQL database, created on enter and dropped (WITH (FORCE)) on exit."""

    def __init__(self, server_url: str = POSTGRES_URL):
        self.server_url = server_url
        self.name = f"storage_bench_{secrets.token_hex(4)}"

    def url_of(self, database: str) -> str:
        # the server URL may carry a query (``?host=/var/run/postgresql`` for the Unix socket)
        base, _, query = self.server_url.partition("?")
        return f"{base.rstrip('/')}/{database}" + (f"?{query}" if query else "")

    @property
    def url(self) -> str:
        return self.url_of(self.name)

    def _execute(self, sql: str) -> None:
        conn = psycopg2.connect(self.url_of("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> None:
        self._execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __enter__(self) -> Database:
        self.create()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.drop()


# --------------------------------------------------------------------------------------------- /proc


@dataclasses.dataclass(frozen=True)
class Memory:
    """Resident set size now and its high-water mark, in bytes, and CPU time used so far (s) of one process."""

    rss: int
    hwm: int
    cpu_s: float = 0.0


def _stat_fields(text: str) -> list[str]:
    """Fields of /proc/<pid>/stat after ``comm`` (which may hold spaces or parentheses): state, ppid, ..."""
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (utime and stime of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = _stat_fields(stat.read())
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_memory(pid: int) -> Memory:
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                number, unit = rest.split()
                assert unit == "kB", line
                values[key] = int(number) * 1024
    return Memory(rss=values["VmRSS"], hwm=values["VmHWM"], cpu_s=cpu_seconds(pid))


def child_pids(pid: int) -> list[int]:
    """Children of ``pid``: /proc/<pid>/task/*/children, else a scan of /proc/*/stat for the parent pid."""
    found: set[int] = set()
    tasks = Path(f"/proc/{pid}/task")
    try:
        files = list(tasks.glob("*/children"))
    except OSError:
        files = []
    if files:
        for path in files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in path.read_text().split())
        return sorted(found)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(_stat_fields(text)[1]) == pid:
            found.add(int(stat.parent.name))
    return sorted(found)


def machine() -> dict[str, Any]:
    """nproc (CPUs this process may use), CPU model and memory of the machine."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "mem_total": mem_total,
            "python": sys.version.split()[0]}


# --------------------------------------------------------------------------------------------- service


class ManagedProcess:
    """A process started in a process group of its own, with its output in ``log_path``."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # the process group is the one start() created: this process and its children only
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


class Service(ManagedProcess):
    """One gunicorn service process (master + ``STORAGE_WORKERS=workers`` gevent workers, default 1) on a free port."""

    def __init__(self, workspace: Workspace, kind: str, env: dict[str, str], log_path: Path, workers: int = 1,
                 s3: bool = False):
        if kind not in SERVICES:
            raise ValueError(f"unknown service {kind!r}; expected one of {sorted(SERVICES)}")
        self.workspace = workspace
        self.kind = kind
        self.port = free_port()
        self.workers = workers
        # s3: the same workers also serve the S3 API on a second port (STORAGE_S3_BIND)
        self.s3_port = free_port() if s3 else None
        self.env = {**env, "STORAGE_BIND": f"127.0.0.1:{self.port}", "STORAGE_WORKERS": str(workers),
                    **({"STORAGE_S3_BIND": f"127.0.0.1:{self.s3_port}"} if s3 else {})}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._worker: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def s3_url(self, path: str) -> str:
        if self.s3_port is None:
            raise BenchError(f"{self.kind}-service was started without an S3 listener")
        return f"http://127.0.0.1:{self.s3_port}{path}"

    def start(self, timeout: float = 60) -> Service:
        with open(self.log_path, "ab") as log:
            # own session: a Ctrl-C of the benchmark reaches the service only through stop()
            self.process = subprocess.Popen([str(bin_dir() / SERVICES[self.kind])], env=self.env, cwd=REPO,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            self._wait_live(timeout)
            self.worker_pids()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_live(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"{self.kind}-service exited with {self.process.returncode} while starting\n"
                                 + self.log_tail())
            try:
                if requests.get(self.url("/health/live"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.kind}-service did not answer /health/live within {timeout} s\n"
                                 + self.log_tail())
            time.sleep(0.1)

    def worker_pids(self, timeout: float = 10) -> list[int]:
        """The pids of the gunicorn workers (the children of the master), once all ``workers`` are up."""
        assert self.process is not None, "service not started"
        deadline = time.monotonic() + timeout
        while True:
            children = child_pids(self.process.pid)
            if len(children) == self.workers:
                if self.workers == 1:
                    self._worker = children[0]
                return children
            if time.monotonic() > deadline:
                raise BenchError(f"expected {self.workers} worker(s) under gunicorn master {self.process.pid}, "
                                 f"found {children}")
            time.sleep(0.1)

    def worker_pid(self, timeout: float = 10) -> int:
        """The pid of the single gunicorn worker (the only child of the master)."""
        if self._worker is not None and Path(f"/proc/{self._worker}").exists():
            return self._worker
        if self.workers != 1:
            raise BenchError(f"worker_pid() needs a single worker; this service has {self.workers}")
        self.worker_pids(timeout)
        assert self._worker is not None
        return self._worker

    def memory(self) -> Memory:
        """VmRSS and VmHWM of the worker; a BenchError if gunicorn replaced it (the figures would mean nothing)."""
        assert self.process is not None and self._worker is not None, "service not started"
        children = child_pids(self.process.pid)
        if children != [self._worker]:
            raise BenchError(f"the gunicorn worker {self._worker} was replaced (children of the master now: "
                             f"{children})\n{self.log_tail()}")
        return read_memory(self._worker)

    def expect(self, response: requests.Response, *statuses: int) -> requests.Response:
        """``response`` if its status is one of ``statuses``, else a BenchError with its body and the log tail."""
        if response.status_code not in statuses:
            raise BenchError(f"{response.request.method} {response.url} answered {response.status_code} "
                             f"(expected {statuses}): {response.text[:2000]}\n{self.log_tail()}")
        return response

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- workspace


class Workspace:
    """A temporary directory and database with a location ``hot`` and a public-read bucket ``bench``.

    Use as a context manager; ``keep=True`` keeps the directory and the database for inspection.
    """

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.database = Database()
        self.tmp: Path | None = None
        self.env: dict[str, str] = {}
        self._services = 0
        self._quota_granted = False

    @property
    def root(self) -> Path:
        assert self.tmp is not None, "workspace not entered"
        return self.tmp

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def __enter__(self) -> Workspace:
        self.tmp = Path(tempfile.mkdtemp(prefix="storage-bench-"))
        self.log_dir.mkdir()
        self.database.create()
        try:
            # only our STORAGE_* settings: none inherited from the caller's shell (or the Makefile)
            base = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE_")}
            self.env = {**base,
                        "STORAGE_DATABASE_URL": self.database.url,
                        "STORAGE_DATA_DIR": str(self.root / "var"),
                        "STORAGE_AUTH_DISABLED": "1",
                        # one sealing secret for storage-admin and every service: S3 access keys open everywhere
                        "STORAGE_S3_SEALING_KEY": secrets.token_hex(32)}
            self.admin("db", "upgrade")
            self.admin("location", "add", LOCATION, "--plugin", "local",
                       "--config", json.dumps({"root": str(self.root / LOCATION)}))
            self.admin("bucket", "add", BUCKET, "--visibility", "public-read")
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if self.keep:
            print(f"kept workspace {self.root} and database {self.database.name}", file=sys.stderr)
            return
        self.database.drop()
        if exc_type is None:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            # keep the service logs for the post-mortem, not the gigabytes of data
            for name in ("var", LOCATION, "www"):
                shutil.rmtree(self.root / name, ignore_errors=True)
            print(f"benchmark failed; service logs kept in {self.log_dir}", file=sys.stderr)

    def admin(self, *args: str) -> str:
        """Run ``storage-admin`` with the workspace's settings; its output, or a BenchError."""
        done = subprocess.run([str(bin_dir() / "storage-admin"), *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"storage-admin {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def service(self, kind: str = "storage", workers: int = 1, s3: bool = False, **env: str) -> Service:
        """A (not yet started) service; use ``with workspace.service() as svc:``."""
        return Service(self, kind, {**self.env, **env}, self.log_path(f"{kind}-service"), workers, s3)

    def access_key(self) -> tuple[str, str]:
        """(access key id, secret) of a new S3 access key of the admin account."""
        made = json.loads(self.admin("access-key", "create", "--account", "admin", "--role", "admin"))
        return made["access_key_id"], made["secret_access_key"]

    def log_path(self, name: str) -> Path:
        """A new numbered log file in the log directory, for one process."""
        self._services += 1
        return self.log_dir / f"{self._services:02d}-{name}.log"

    def grant_read_quota(self, service: Service, quota: int = 1 << 50) -> None:
        """Give the bucket enough charged read quota for every download (PATCH needs the storage profile)."""
        if self._quota_granted:
            return
        if service.kind != "storage":
            raise BenchError("the read quota is granted through the storage service, not the downloader")
        response = requests.patch(service.url(f"/api/v1/buckets/{BUCKET}"), json={"charged_read_quota": quota},
                                  timeout=30)
        service.expect(response, 200)
        self._quota_granted = True


# --------------------------------------------------------------------------------------------- other servers


class ChildProcess(ManagedProcess):
    """Any other server the benchmarks start (nginx, a reference gunicorn app): its own session, its output
    in ``log_path``, ready once ``ready_url`` answers 200, stopped with SIGTERM (SIGKILL of its group after
    ``timeout``)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, ready_url: str,
                 env: dict[str, str] | None = None, cwd: Path = REPO):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.ready_url = ready_url
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ChildProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.process.poll() is not None:
                    raise BenchError(f"{self.name} exited with {self.process.returncode} while starting\n"
                                     + self.log_tail())
                try:
                    if requests.get(self.ready_url, timeout=2).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name} did not answer {self.ready_url} within {timeout} s\n"
                                     + self.log_tail())
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def worker_pids(self) -> list[int]:
        assert self.process is not None, f"{self.name} not started"
        return child_pids(self.process.pid)

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
