"""Throughput of the downloader service next to references serving the same bytes, driven by wrk.

One workspace (fresh PostgreSQL database, temporary directory), then:

- the storage service (one worker) receives two objects by upload, ``big.bin`` (256 MiB by default) and
  ``small.bin`` (4 KiB); the very same bytes are written to ``<tmp>/www/`` first and uploaded from
  there, and the service's sha256 must match; the bucket gets 2**50 bytes of charged read quota;
- three servers start side by side on free loopback ports, each with as many workers as the machine
  has CPUs: ``downloader-service`` (gunicorn + gevent, ``STORAGE_WORKERS``, PostgreSQL with its default
  ``synchronous_commit``, every GET charged with a durable read record), nginx (the Debian package,
  own configuration in the temporary directory, ``sendfile on``) serving ``<tmp>/www``, and a bare Flask
  ``send_file`` app (bench/bare_app.py) on the same gunicorn settings as the downloader;
- every endpoint is checked once (status, length, bytes), then wrk drives one server at a time, each
  measured run after a 2 s warm-up run:

  - ``big``: GET of the 256 MiB object, ``-t2 -c8``; MiB/s downloader / nginx, target >= 1.0, and server
    CPU per MiB (the downloader's with its PostgreSQL backends) downloader / nginx, target <= 4;
  - ``small``: GET of the 4 KiB object, ``-t2 -c64 --latency``; req/s downloader / bare Flask, target
    >= 0.5 (nginx too, for context);
  - ``range``: 64 KiB at a random offset of the big object, ``-t2 -c16``; req/s downloader / the bare
    Flask range view (``bare-range``: parse, open, seek, read, 206), target >= 0.4 (nginx too, for context).

wrk runs with a Lua script whose ``done`` hook prints the summary as JSON (requests, bytes, errors,
latency percentiles); its text output is parsed too, and any non-2xx response or socket error fails
the benchmark: the figures must not count errors. Throughput in MiB/s is wrk's bytes read (headers
included, the partial transfers at the end too) over the run's duration, i.e. wrk's Transfer/sec.

Each run also measures CPU time: the server's processes (and, for the downloader, the PostgreSQL
backends of its database) per request, wrk's, and what the rest of the machine used meanwhile (the
noise on a shared machine); ``quiet_wait`` waits, before each run, for the rest of the machine to calm
down (less than ``QUIET_CPUS``), for up to that many seconds.

``--profile DIR`` repeats each downloader run with py-spy recording every worker (``--nonblocking``,
100 Hz), writes the raw (collapsed) stacks per worker to DIR (flamegraph.pl or inferno draw them) and
prints the functions with the most self time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import requests

from bench.harness import (
    BUCKET,
    REPO,
    BenchError,
    ChildProcess,
    MiB,
    Service,
    Workspace,
    bin_dir,
    cpu_seconds,
    free_port,
)

KiB = 1024
SMALL_SIZE = 4 * KiB
RANGE_SIZE = 64 * KiB
BIG_KEY = "big.bin"
SMALL_KEY = "small.bin"
QUOTA = 1 << 50
WARMUP_S = 2
# a second downloader with STORAGE_VERIFY_READS=0: what the per-block sha256 check costs (context, no ratio)
NOVERIFY = "downloader-noverify"
QUIET_CPUS = 0.25  # --quiet-wait: other processes may use this many CPUs when a run starts
TIMEOUT = (10, 600)
TOOLS = {"nginx": "nginx", "wrk": "wrk"}  # executable -> Debian package
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"

# printed by wrk when the run ends: one JSON line the benchmark reads instead of wrk's rounded text
WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\nBENCH_WRK {\"duration_us\": %d, \"requests\": %d, \"bytes\": %d, \"connect\": %d, \"read\": %d, "
    .. "\"write\": %d, \"status\": %d, \"timeout\": %d, \"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, "
    .. "\"mean_us\": %.1f, \"max_us\": %d}\n",
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""

# a random ``Range: bytes=a-(a+span-1)`` per request, a different random sequence per wrk thread
WRK_RANGE = r"""
local size, span = {size}, {span}
local threads = 0
setup = function(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
init = function(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
end
request = function()
  local a = math.random(0, size - span)
  return wrk.format(nil, nil, {{["Range"] = string.format("bytes=%d-%d", a, a + span - 1)}})
end
"""


# --------------------------------------------------------------------------------------------- tools


def which(name: str) -> str | None:
    """``name`` on PATH, or in the sbin directories (nginx lives in /usr/sbin, not always on a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path=SBIN)


def ensure_tools(names: tuple[str, ...] = ("nginx", "wrk")) -> dict[str, str]:
    """The paths of ``names``; the missing ones are installed first with apt-get (Debian packages)."""
    missing = [name for name in names if which(name) is None]
    if missing:
        packages = [TOOLS[name] for name in missing]
        if not shutil.which("apt-get"):
            raise BenchError(f"{', '.join(missing)} not found and no apt-get to install them: install "
                             f"{' '.join(packages)}")
        sudo: list[str] = []
        if os.geteuid() != 0:
            if not shutil.which("sudo"):
                raise BenchError(f"{', '.join(missing)} not found; run as root or install {' '.join(packages)}")
            sudo = ["sudo", "-n"]
        print(f"installing {' '.join(packages)} (apt-get)", flush=True)
        # through env(1): sudo would drop DEBIAN_FRONTEND from the environment
        apt_get = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
        for argv in ([*apt_get, "update", "-q"],
                     [*apt_get, "install", "-y", "-q", "--no-install-recommends", *packages]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                                 f"{done.stderr[-2000:]}")
    paths = {name: which(name) for name in names}
    absent = [name for name, path in paths.items() if path is None]
    if absent:
        raise BenchError(f"{', '.join(absent)} still not found after installing")
    return paths


def tool_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


# --------------------------------------------------------------------------------------------- CPU


@dataclasses.dataclass(frozen=True)
class CpuUse:
    """CPU seconds used during a run: by the server driven (its processes, and for the downloader the
    PostgreSQL backends of its database), by wrk, and by everything else on the machine (other people's
    work: the noise on the figures), over ``wall_s`` seconds."""

    wall_s: float
    server_s: float
    wrk_s: float
    other_s: float
    database_s: float = 0.0  # part of server_s: the PostgreSQL backends

    @property
    def other_cpus(self) -> float:
        """How many CPUs other processes kept busy on average during the run."""
        return self.other_s / self.wall_s if self.wall_s else 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def processes_cpu_seconds(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            found[pid] = cpu_seconds(pid)
    return found


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Measures a run's ``CpuUse``: ``start()`` before, ``stop()`` after (wrk must have been waited for).

    ``server_pids`` (the server's processes, the database backends working for it) is asked at both
    ends: a process that appeared during the run (a new database connection) counts whole.
    """

    def __init__(self, server_pids: Callable[[], tuple[list[int], list[int]]]):
        self.server_pids = server_pids

    def _read(self) -> tuple[dict[int, float], dict[int, float]]:
        server, database = self.server_pids()
        return processes_cpu_seconds(server), processes_cpu_seconds(database)

    def start(self) -> CpuMeter:
        self._server, self._database = self._read()
        self._wall = time.monotonic()
        self._busy = machine_busy_seconds()
        self._children = children_cpu_seconds()
        return self

    def stop(self) -> CpuUse:
        wall = time.monotonic() - self._wall
        busy = machine_busy_seconds() - self._busy
        wrk = children_cpu_seconds() - self._children
        server_now, database_now = self._read()
        server = sum(cpu - self._server.get(pid, 0.0) for pid, cpu in server_now.items())
        database = sum(cpu - self._database.get(pid, 0.0) for pid, cpu in database_now.items())
        return CpuUse(wall, server + database, wrk, max(0.0, busy - server - database - wrk), database)


def other_load(pids: list[int], seconds: float = 1.0) -> float:
    """CPUs kept busy over ``seconds`` by processes other than ``pids``."""
    before, busy = processes_cpu_seconds(pids), machine_busy_seconds()
    time.sleep(seconds)
    now = processes_cpu_seconds(pids)
    ours = sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())
    return max(0.0, machine_busy_seconds() - busy - ours) / seconds


# --------------------------------------------------------------------------------------------- wrk


@dataclasses.dataclass
class WrkResult:
    """One wrk run against one server."""

    server: str
    url: str
    threads: int
    connections: int
    duration_s: float
    requests: int
    bytes: int
    errors: dict[str, int]
    non_2xx: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    text_req_per_s: float | None
    text_transfer: str | None
    output: str
    charged_reads: int | None = None
    charged_bytes: int | None = None
    db_commits: int | None = None
    db_sessions: int | None = None
    cpu: CpuUse | None = None

    @property
    def req_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MiB / self.duration_s if self.duration_s else 0.0

    @property
    def wrk_args(self) -> str:
        return f"-t{self.threads} -c{self.connections}"

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("output")
        data.update(req_per_s=self.req_per_s, mib_per_s=self.mib_per_s)
        return data


def parse_wrk(server: str, url: str, threads: int, connections: int, output: str) -> WrkResult:
    match = re.search(r"^BENCH_WRK (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"wrk against {server} printed no summary:\n{output[-3000:]}")
    summary = json.loads(match.group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    req_s = re.search(r"Requests/sec:\s*([\d.]+)", output)
    transfer = re.search(r"Transfer/sec:\s*(\S+)", output)
    return WrkResult(
        server=server, url=url, threads=threads, connections=connections,
        duration_s=summary["duration_us"] / 1e6, requests=summary["requests"], bytes=summary["bytes"],
        errors={k: summary[k] for k in ("connect", "read", "write", "status", "timeout")},
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        p50_us=summary["p50_us"], p90_us=summary["p90_us"], p99_us=summary["p99_us"],
        mean_us=summary["mean_us"], max_us=summary["max_us"],
        text_req_per_s=float(req_s.group(1)) if req_s else None,
        text_transfer=transfer.group(1) if transfer else None, output=output)


def check_wrk(result: WrkResult, hint: Callable[[], str] | None = None, warmup: bool = False) -> None:
    """BenchError when the run counted any error: its figures would mean nothing (``hint``: what to add).

    A warm-up (``warmup``) may end before any response completes when it received bytes: on a loaded
    machine eight 256 MiB downloads can take longer than its 2 s."""
    bad = {k: v for k, v in result.errors.items() if v}
    if result.non_2xx:
        bad["non-2xx/3xx responses"] = result.non_2xx
    if result.requests == 0 and not (warmup and result.bytes):
        bad["requests"] = 0
    if bad:
        raise BenchError(f"wrk against {result.server} ({result.url}) counted errors {bad}; "
                         f"the figures would count failures.{hint() if hint else ''}\n{result.output[-3000:]}")


# --------------------------------------------------------------------------------------------- helpers


def cpu_per_request(r: WrkResult) -> str:
    """Server CPU per request, with the PostgreSQL part when there is one: "3.10 ms (db 0.90)"."""
    if r.cpu is None or not r.requests:
        return "-"
    text = f"{1000 * r.cpu.server_s / r.requests:.2f} ms"
    if r.cpu.database_s:
        text += f" (db {1000 * r.cpu.database_s / r.requests:.2f})"
    return text


def database_per_request(r: WrkResult) -> str:
    """PostgreSQL commits and new connections per request: "2.1 commits, 0.35 new connections"."""
    if r.db_commits is None or r.db_sessions is None or not r.requests:
        return "-"
    return f"{r.db_commits / r.requests:.2f} commits, {r.db_sessions / r.requests:.2f} new connections"


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"


def sigv4_headers(url: str, access_key_id: str, secret: str) -> dict[str, str]:
    """The headers of a GET of ``url`` signed with SigV4 by botocore, as an S3 SDK sends it (UNSIGNED-PAYLOAD
    is what a GET declares too: it has no body)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(access_key_id, secret), "s3", "us-east-1").add_auth(request)
    return {name: value for name, value in request.headers.items() if name.lower() != "host"}


def write_object_file(path: Path, size: int) -> str:
    """``size`` random bytes (1 MiB blocks, each with its counter in the first 8 bytes) into ``path``; sha256."""
    digest = hashlib.sha256()
    block = bytearray(os.urandom(min(MiB, max(size, 8))))
    with open(path, "wb") as out:
        for counter, offset in enumerate(range(0, size, MiB)):
            block[:8] = counter.to_bytes(8, "big")
            chunk = bytes(block[: min(MiB, size - offset)])
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def nginx_config(root: Path, www: Path, port: int, workers: int) -> str:
    # as root, nginx's workers would switch to "nobody" and could not read the private temporary directory
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {root / ('tmp-' + kind)};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# generated by bench/throughput.py: static files, as close to the hardware as nginx gets
{user}worker_processes {workers};
pid {root / 'nginx.pid'};
error_log {root / 'error.log'} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
{temp}
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location / {{ }}
    }}
}}
"""


# --------------------------------------------------------------------------------------------- benchmark


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    key: str
    connections: int
    servers: tuple[str, ...]  # the first one is the downloader, the second the reference of the ratio; then context
    metric: str  # "mib_per_s" or "req_per_s"
    target: float | None
    range_script: bool = False
    # server CPU per MiB sent, downloader / reference: at most this (None: not a target)
    cpu_target: float | None = None


# the bare Flask app's range view (bench/bare_app.py): parse ``bytes=a-b``, open, seek, read, 206
BARE_RANGE = "bare-range"
# the downloader's S3 listener (same processes): anonymous GetObject, and GetObject signed with SigV4
S3 = "downloader-s3"
S3_SIGNED = "downloader-s3-signed"

SCENARIOS = (
    Scenario("big", "256 MiB object", BIG_KEY, 8, ("downloader", "nginx", NOVERIFY), "mib_per_s", 1.0,
             cpu_target=4.0),
    Scenario("small", "4 KiB object", SMALL_KEY, 64, ("downloader", "bare-flask", "nginx"), "req_per_s", 0.5),
    Scenario("range", "64 KiB ranges of the 256 MiB object", BIG_KEY, 16,
             ("downloader", BARE_RANGE, "nginx", NOVERIFY), "req_per_s", 0.4, range_script=True),
    # issue 11: S3 GetObject (anonymous, public-read bucket, charged) at >= 0.9 of the native download path
    Scenario("s3-small", "4 KiB object, S3 GetObject vs native", SMALL_KEY, 64, (S3, "downloader"), "req_per_s", 0.9),
    Scenario("s3-big", "256 MiB object, S3 GetObject vs native", BIG_KEY, 8, (S3, "downloader"), "mib_per_s", 0.9),
    # a signed GetObject's SigV4 check (and access-key lookup) costs at most 10 % more than an anonymous one
    Scenario("s3-signed", "4 KiB object, signed vs anonymous S3 GetObject", SMALL_KEY, 64, (S3_SIGNED, S3),
             "req_per_s", 0.9),
)


class ThroughputBenchmark:
    """The wrk measurements on one workspace; ``run()`` returns the results (see ``report``)."""

    def __init__(self, workspace: Workspace, big_size: int = 256 * MiB, duration: int = 15, threads: int = 2,
                 workers: int | None = None, profile_dir: Path | None = None, only: tuple[str, ...] = (),
                 quiet_wait: float = 0):
        self.workspace = workspace
        self.big_size = big_size
        self.duration = duration
        self.threads = threads
        self.workers = workers or len(os.sched_getaffinity(0))
        self.profile_dir = profile_dir
        self.quiet_wait = quiet_wait
        self.scenarios = [dataclasses.replace(s, title=s.title.replace("256 MiB", f"{big_size // MiB} MiB"))
                          for s in SCENARIOS if not only or s.name in only]
        self.tools: dict[str, str] = {}
        self.www = workspace.root / "www"
        self.checksums: dict[str, str] = {}
        self.sizes = {BIG_KEY: big_size, SMALL_KEY: SMALL_SIZE}
        self.urls: dict[str, dict[str, str]] = {}
        # request headers per server (the signed S3 GET), made fresh before each wrk run
        self.headers: dict[str, Callable[[str], dict[str, str]]] = {}
        self.downloader: Service | None = None
        self.servers: dict[str, Service | ChildProcess] = {}
        self.profiles: dict[str, list[tuple[str, int]]] = {}

    # ---- setup ----------------------------------------------------------------------------------------

    def prepare_objects(self) -> None:
        """Write the objects to www/ and upload the same bytes through the storage service."""
        self.www.mkdir()
        for key, size in self.sizes.items():
            self.checksums[key] = write_object_file(self.www / key, size)
        with self.workspace.service("storage", STORAGE_LOG_LEVEL="WARNING") as service:
            self.workspace.grant_read_quota(service, QUOTA)
            for key in self.sizes:
                with open(self.www / key, "rb") as body:
                    response = requests.put(service.url(f"/api/v1/buckets/{BUCKET}/objects/{key}"), data=body,
                                            headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
                view = service.expect(response, 200, 201).json()
                if view.get("checksum") != self.checksums[key] or view.get("size") != self.sizes[key]:
                    raise BenchError(f"upload of {key}: the service recorded {view.get('checksum')} "
                                     f"({view.get('size')} bytes), the file is {self.checksums[key]}")

    def start_nginx(self, stack: contextlib.ExitStack) -> None:
        root = self.workspace.root / "nginx"
        root.mkdir()
        port = free_port()
        conf = root / "nginx.conf"
        conf.write_text(nginx_config(root, self.www, port, self.workers))
        nginx = ChildProcess("nginx", [self.tools["nginx"], "-p", str(root), "-e", str(root / "error.log"),
                                       "-c", str(conf), "-g", "daemon off;"],
                             self.workspace.log_path("nginx"), f"http://127.0.0.1:{port}/{SMALL_KEY}")
        stack.enter_context(nginx)
        self.servers["nginx"] = nginx
        base = f"http://127.0.0.1:{port}"
        self.urls["nginx"] = {key: f"{base}/{key}" for key in self.sizes}

    def start_bare(self, stack: contextlib.ExitStack) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE_")}
        env["BENCH_BARE_FILE"] = str(self.www / SMALL_KEY)
        env["BENCH_BARE_RANGE_FILE"] = str(self.www / BIG_KEY)
        argv = [str(bin_dir() / "gunicorn"), "-k", "gevent", "-w", str(self.workers), "--worker-connections", "1000",
                # the downloader's other gunicorn settings (storage_core/serving.py) that could matter
                "--keep-alive", "5", "--no-control-socket", "--log-level", "warning",
                "-b", f"127.0.0.1:{port}", "bench.bare_app:app"]
        bare = ChildProcess("bare Flask app", argv, self.workspace.log_path("bare-app"),
                            f"http://127.0.0.1:{port}/health", env=env, cwd=REPO)
        stack.enter_context(bare)
        self.servers["bare-flask"] = bare
        self.urls["bare-flask"] = {SMALL_KEY: f"http://127.0.0.1:{port}/{SMALL_KEY}"}
        if any(BARE_RANGE in s.servers for s in self.scenarios):
            # the same processes; their range view serves the big object
            self.servers[BARE_RANGE] = bare
            self.urls[BARE_RANGE] = {BIG_KEY: f"http://127.0.0.1:{port}/range.bin"}

    def start_downloader(self, stack: contextlib.ExitStack, name: str = "downloader", **env: str) -> None:
        # PGAPPNAME (read by libpq) tells this instance's PostgreSQL backends from the other's
        s3 = name == "downloader" and any(S3 in sc.servers or S3_SIGNED in sc.servers for sc in self.scenarios)
        service = self.workspace.service("downloader", workers=self.workers, s3=s3, STORAGE_LOG_LEVEL="WARNING",
                                         PGAPPNAME=f"bench-{name}", **env)
        stack.enter_context(service)
        if name == "downloader":
            self.downloader = service
        self.servers[name] = service
        self.urls[name] = {key: service.url(f"/api/v1/buckets/{BUCKET}/objects/{key}") for key in self.sizes}
        if s3:
            # the S3 listener of the same processes: its CPU and PostgreSQL backends are the downloader's
            key_id, secret = self.workspace.access_key()
            for server in (S3, S3_SIGNED):
                self.servers[server] = service
                self.urls[server] = {key: service.s3_url(f"/{BUCKET}/{key}") for key in self.sizes}
            self.headers[S3_SIGNED] = lambda url: sigv4_headers(url, key_id, secret)

    def sanity_check(self) -> None:
        """One request per endpoint: 200 with the whole object, 206 with the right 64 KiB."""
        with open(self.www / SMALL_KEY, "rb") as small:
            small_bytes = small.read()
        offset = min(12345, self.big_size - RANGE_SIZE)
        with open(self.www / BIG_KEY, "rb") as big:
            big.seek(offset)
            range_bytes = big.read(RANGE_SIZE)
        for server, urls in self.urls.items():
            for key, url in urls.items():
                digest = hashlib.sha256()
                received = 0
                with requests.get(url, stream=True, timeout=TIMEOUT, headers=self.request_headers(server, url)) \
                        as response:
                    if response.status_code != 200:
                        raise BenchError(f"GET {url} ({server}) answered {response.status_code}: "
                                         f"{response.text[:1000]}")
                    for chunk in response.iter_content(MiB):
                        digest.update(chunk)
                        received += len(chunk)
                if received != self.sizes[key] or digest.hexdigest() != self.checksums[key]:
                    raise BenchError(f"GET {url} ({server}): {received} bytes, sha256 {digest.hexdigest()}; "
                                     f"expected {self.sizes[key]} bytes, {self.checksums[key]}")
                if key == SMALL_KEY and received != len(small_bytes):
                    raise BenchError(f"GET {url} ({server}): wrong size")
                if key == BIG_KEY:
                    headers = {"Range": f"bytes={offset}-{offset + RANGE_SIZE - 1}",
                               **self.request_headers(server, url)}
                    response = requests.get(url, headers=headers, timeout=TIMEOUT)
                    if response.status_code != 206 or response.content != range_bytes:
                        raise BenchError(f"GET {url} ({server}) with {headers}: {response.status_code}, "
                                         f"{len(response.content)} bytes; expected 206 with the {RANGE_SIZE} "
                                         f"bytes at {offset}")
        print("sanity check: every endpoint answered 200 / 206 with the right bytes", flush=True)

    # ---- wrk ------------------------------------------------------------------------------------------

    def script(self, scenario: Scenario) -> Path:
        path = self.workspace.root / f"wrk-{scenario.name}.lua"
        text = WRK_DONE
        if scenario.range_script:
            text = WRK_RANGE.format(size=self.big_size, span=RANGE_SIZE) + text
        path.write_text(text)
        return path

    def request_headers(self, server: str, url: str) -> dict[str, str]:
        make = self.headers.get(server)
        return make(url) if make is not None else {}

    def wrk(self, scenario: Scenario, server: str, duration: float) -> WrkResult:
        url = self.urls[server][scenario.key]
        # a SigV4 signature holds for 15 minutes: every request of a run carries the same signed headers,
        # and the server verifies each of them (signature and access-key lookup) as it would a fresh one
        headers = [arg for name, value in self.request_headers(server, url).items()
                   for arg in ("-H", f"{name}: {value}")]
        argv = [self.tools["wrk"], f"-t{self.threads}", f"-c{scenario.connections}", f"-d{duration}s",
                "--timeout", "60s", "--latency", *headers, "-s", str(self.script(scenario)), url]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 120)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{output[-3000:]}")
        return parse_wrk(server, url, self.threads, scenario.connections, output)

    def server_pids(self, server: str) -> tuple[list[int], list[int]]:
        """The processes doing ``server``'s work: (master and workers, the downloader's PostgreSQL backends)."""
        process = self.servers[server]
        assert process.process is not None
        pids = [process.process.pid, *process.worker_pids()]
        backends: list[int] = []
        if server.startswith("downloader"):
            appname = "bench-downloader" if server in (S3, S3_SIGNED) else f"bench-{server}"
            conn = psycopg2.connect(self.workspace.database.url)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                "AND application_name = %s", (appname,))
                    backends = [row[0] for row in cur.fetchall()]
            finally:
                conn.close()
        return pids, backends

    def database_counters(self) -> tuple[int, int]:
        """(transactions committed, sessions opened) in the workspace's database, from pg_stat_database.

        PostgreSQL publishes a busy backend's counts about once a second and a session's at its end:
        differences over a run are close, not exact.
        """
        conn = psycopg2.connect(self.workspace.database.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()")
                commits, sessions = cur.fetchone()
        finally:
            conn.close()
        return int(commits), int(sessions)

    def wait_for_quiet(self) -> None:
        """Up to ``quiet_wait`` seconds until other processes use less than ``QUIET_CPUS`` CPUs (1 s samples)."""
        if not self.quiet_wait:
            return
        ours = [pid for name in self.servers for group in self.server_pids(name) for pid in group]
        deadline = time.monotonic() + self.quiet_wait
        load = other_load(ours)
        while load >= QUIET_CPUS:
            if time.monotonic() >= deadline:
                print(f"  (machine still busy: other processes use {load:.2f} CPUs; measuring anyway)", flush=True)
                return
            load = other_load(ours)

    def charged(self, start_us: int, end_us: int, full_size: int) -> tuple[int, int, int]:
        """Read records stamped in ``[start_us, end_us)``: (count, bytes charged, count of ``full_size`` reads).

        Reads cut short when wrk stops are refunded (their record corrected, or deleted if nothing
        was delivered), so only the complete reads can be compared with wrk's count of responses.
        """
        conn = psycopg2.connect(self.workspace.database.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*), coalesce(sum(read_size), 0), count(*) FILTER (WHERE read_size = %s) "
                            "FROM read_records WHERE timestamp_us >= %s AND timestamp_us < %s",
                            (full_size, start_us, end_us))
                count, total, full = cur.fetchone()
        finally:
            conn.close()
        return int(count), int(total), int(full)

    def quota_hint(self) -> str:
        assert self.downloader is not None
        try:
            quota = requests.get(self.downloader.url(f"/api/v1/buckets/{BUCKET}/read-quota"), timeout=30).text
        except requests.RequestException as exc:
            quota = f"(read-quota failed: {exc})"
        return f"\nbucket {BUCKET} read quota: {quota}\n{self.downloader.log_tail(20)}"

    def measure(self, scenario: Scenario, server: str) -> WrkResult:
        is_downloader = server.startswith("downloader")
        hint = self.quota_hint if is_downloader else None
        if WARMUP_S:
            check_wrk(self.wrk(scenario, server, WARMUP_S), hint, warmup=True)
        self.wait_for_quiet()
        start_us = time.time_ns() // 1000
        counters = self.database_counters() if is_downloader else None
        meter = CpuMeter(lambda: self.server_pids(server)).start()
        result = self.wrk(scenario, server, self.duration)
        result.cpu = meter.stop()
        check_wrk(result, hint)
        if counters is not None:
            time.sleep(1)  # the reads cut short by the end of the run are refunded by now
            after = self.database_counters()
            result.db_commits, result.db_sessions = after[0] - counters[0], after[1] - counters[1]
            full_size = RANGE_SIZE if scenario.range_script else self.sizes[scenario.key]
            count, total, full = self.charged(start_us, time.time_ns() // 1000, full_size)
            result.charged_reads, result.charged_bytes = count, total
            if full < result.requests:
                raise BenchError(f"wrk counted {result.requests} complete downloads but only {full} read "
                                 f"records of {full_size} bytes were written{self.quota_hint()}")
        self.print_result(scenario, result)
        return result

    @staticmethod
    def print_result(scenario: Scenario, r: WrkResult) -> None:
        charged = (f", {r.charged_reads} read records ({r.charged_bytes / MiB:.0f} MiB charged), "
                   f"PostgreSQL {database_per_request(r)}" if r.charged_reads is not None else "")
        print(f"{scenario.name:5} {r.server:19} {r.wrk_args}: {r.requests} requests in {r.duration_s:.1f} s, "
              f"{r.req_per_s:.0f} req/s, {r.mib_per_s:.1f} MiB/s, latency p50 {fmt_us(r.p50_us)} "
              f"p99 {fmt_us(r.p99_us)}, server CPU {cpu_per_request(r)} per request{charged}; "
              f"other processes kept {r.cpu.other_cpus:.2f} CPUs busy", flush=True)

    # ---- profile --------------------------------------------------------------------------------------

    def profile(self, scenario: Scenario) -> None:
        """A further wrk run on the downloader with py-spy recording each worker (figures not kept)."""
        assert self.downloader is not None and self.profile_dir is not None
        py_spy = shutil.which("py-spy", path=str(bin_dir())) or shutil.which("py-spy")
        if py_spy is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        record_s = max(1, self.duration - 2)
        spies = []
        for pid in self.downloader.worker_pids():
            path = self.profile_dir / f"{scenario.name}-worker-{pid}.txt"
            spies.append((path, subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration", str(record_s), "--rate", "100",
                 "--format", "raw", "--output", str(path), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        time.sleep(0.5)
        result = self.wrk(scenario, "downloader", self.duration)
        stacks: Counter[str] = Counter()
        for path, spy in spies:
            _, err = spy.communicate(timeout=120)
            if spy.returncode != 0:
                raise BenchError(f"py-spy failed ({spy.returncode}): {err[-2000:]}")
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    stacks[stack] += int(count)
        check_wrk(result, self.quota_hint)
        print(f"\nprofile of the downloader workers, {scenario.name} ({result.req_per_s:.0f} req/s, "
              f"{result.mib_per_s:.1f} MiB/s under py-spy); stacks in {self.profile_dir}")
        self.profiles[scenario.name] = summarize_profile(stacks)

    # ---- run ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.tools = ensure_tools()
        versions = {"nginx": tool_version([self.tools["nginx"], "-v"]),
                    "wrk": tool_version([self.tools["wrk"], "-v"])}
        print(f"throughput benchmarks: {self.big_size // MiB} MiB and 4 KiB objects, {self.duration} s per run, "
              f"{self.workers} workers per server; {versions['nginx']}; {versions['wrk'].split(' Copyright')[0]}",
              flush=True)
        load_before = os.getloadavg()
        self.prepare_objects()
        results: dict[str, list[WrkResult]] = {}
        with contextlib.ExitStack() as stack:
            self.start_downloader(stack)
            if any(NOVERIFY in s.servers for s in self.scenarios):
                self.start_downloader(stack, NOVERIFY, STORAGE_VERIFY_READS="0")
            self.start_nginx(stack)
            self.start_bare(stack)
            self.sanity_check()
            for scenario in self.scenarios:
                results[scenario.name] = [self.measure(scenario, server) for server in scenario.servers]
            if self.profile_dir is not None:
                for scenario in self.scenarios:
                    self.profile(scenario)
                    print_profile(self.profiles[scenario.name])
        return {"results": results, "ratios": ratios(self.scenarios, results), "versions": versions,
                "workers": self.workers, "duration": self.duration, "big_size": self.big_size,
                "threads": self.threads, "load_before": load_before, "scenarios": self.scenarios}


def cpu_ms_per_mib(r: WrkResult) -> float:
    """Server CPU (with the downloader's PostgreSQL backends) per MiB wrk received, in milliseconds."""
    return 1000 * r.cpu.server_s / (r.bytes / MiB) if r.cpu is not None and r.bytes else 0.0


def ratios(scenarios: list[Scenario], results: dict[str, list[WrkResult]]) -> list[dict[str, Any]]:
    """One row per ratio: the scenario's metric (higher is better, ``at_least`` its target), and for those
    with a ``cpu_target`` the server CPU per MiB (lower is better: at most the target)."""
    rows = []
    for scenario in scenarios:
        downloader, reference = results[scenario.name][0], results[scenario.name][1]
        mine, theirs = getattr(downloader, scenario.metric), getattr(reference, scenario.metric)
        ratio = mine / theirs if theirs else 0.0
        rows.append({"scenario": scenario.name, "title": scenario.title, "metric": scenario.metric,
                     "reference": reference.server, "downloader": mine, "reference_value": theirs,
                     "ratio": ratio, "target": scenario.target, "at_least": True,
                     "ok": scenario.target is None or ratio >= scenario.target})
        if scenario.cpu_target is not None:
            mine, theirs = cpu_ms_per_mib(downloader), cpu_ms_per_mib(reference)
            ratio = mine / theirs if theirs else float("inf")
            rows.append({"scenario": scenario.name, "title": scenario.title, "metric": "cpu_ms_per_mib",
                         "reference": reference.server, "downloader": mine, "reference_value": theirs,
                         "ratio": ratio, "target": scenario.cpu_target, "at_least": False,
                         "ok": ratio <= scenario.cpu_target})
    return rows


def summarize_profile(stacks: Counter[str], top: int = 15) -> list[tuple[str, int]]:
    """Functions by self samples (the innermost frame of each stack), plus the total as ("(total)", n)."""
    own: Counter[str] = Counter()
    total = 0
    for stack, count in stacks.items():
        leaf = stack.rsplit(";", 1)[-1]
        # "function (path/to/file.py:123)" -> "function (file.py)": one line per function, not per line
        match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", leaf)
        if match:
            func, path = match.groups()
            leaf = f"{func} ({'/'.join(Path(path).parts[-2:])})"
        own[leaf] += count
        total += count
    return [("(total)", total), *own.most_common(top)]


def print_profile(summary: list[tuple[str, int]]) -> None:
    total = summary[0][1] or 1
    print(f"  {'self %':>6}  function (samples: {total})")
    for name, count in summary[1:]:
        print(f"  {100 * count / total:6.1f}  {name}")
