"""Scale: the cost of one listing page or look-up as the tables grow, measured from outside over HTTP.

One workspace (fresh PostgreSQL database), then the tables are filled with ``COPY`` (never through the
API: ten million reads would take hours) and ``VACUUM ANALYZE``:

- ``buckets``: 1,000 buckets (``--scale-buckets``); one per size of ``--scale-sizes`` holds that many read
  records of one UTC month (the month before the current one), the other ones ``--scale-other-records``
  each, all in the one ``read_records`` table; timestamps spread evenly over the month in an order
  unrelated to their ids (a Weyl sequence), so that a bucket's page of consecutive records touches
  scattered heap pages, as records written over a month by many buckets would;
- one bucket per size of ``--scale-objects`` holds that many objects, each of its own file with one
  stored copy on the ``hot`` location (``files``, ``file_copies``, ``objects``);
- each sized bucket has a ``bucket_traffic`` row for the month (what ``read-quota`` reads).

One ``storage-service`` (one gunicorn gevent worker, authentication on: an admin token for the listings
and read-quota, a plain account's token for availability) answers, one request at a time over one
keep-alive connection, ``--scale-samples`` times each (after a few warm-up requests):

- ``read-records`` of each sized bucket: the first page of the month (100 records), the page reached by
  a cursor in the middle of the month (the cursor is the ``next_cursor`` of a one-record page starting
  there, then used with the month's start: the pages before it are what a deep cursor must not pay
  for), and the first page of a one-day window in the middle of the month;
- ``read-quota`` of the month, of each sized bucket;
- the object listing of each sized bucket: the first page (100 objects) and a page reached by a cursor
  in the middle of the key range (the ``next_cursor`` of a one-object listing of the prefix there);
- ``POST /files/availability`` of 1,000 checksums of the largest bucket, as admin and as a plain account
  (which goes through the read permission's join with the buckets).

The sizes are measured in turns (one request to each size, then the next round), so the load of a shared
machine falls on all of them alike. Ratios: p99 at the largest size over p99 at the smallest, target
<= 2 (flat); availability: p99 < 50 ms. CPU time per request is taken from /proc/<pid>/schedstat
(nanoseconds) of the worker and of its PostgreSQL backends, around each request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import requests

from bench.harness import LOCATION, BenchError, Service, Workspace, bin_dir, cpu_seconds

DEFAULT_SIZES = (10_000, 1_000_000, 10_000_000)
DEFAULT_OBJECTS = (10_000, 100_000, 1_000_000)
DEFAULT_SAMPLES = 300
DEFAULT_BUCKETS = 1_000
DEFAULT_OTHER_RECORDS = 1_000
WARMUP = 5
PAGE = 100
AVAILABILITY_CHECKSUMS = 1_000
FLAT_TARGET = 2.0
AVAILABILITY_TARGET_MS = 50.0
APP_NAME = "bench-scale"
GOLDEN = 0.6180339887498949
COPY_CHUNK = 20_000  # rows per piece handed to COPY
TIMEOUT = (10, 120)


# --------------------------------------------------------------------------------------------- COPY


class _Lines(io.RawIOBase):
    """A readable file over an iterator of text chunks: what psycopg2's ``copy_expert`` reads from."""

    def __init__(self, chunks: Iterator[str]):
        self.chunks = chunks
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk.encode()
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _chunks(rows: Iterator[str]) -> Iterator[str]:
    batch: list[str] = []
    for row in rows:
        batch.append(row)
        if len(batch) == COPY_CHUNK:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


def copy_rows(conn: Any, table: str, columns: str, rows: Iterator[str]) -> None:
    """``COPY table (columns) FROM STDIN`` of tab-separated ``rows`` (each ending with a newline)."""
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", _Lines(_chunks(rows)), size=1 << 20)
    conn.commit()


def month_before(now: dt.datetime) -> tuple[str, int, int]:
    """(YYYY-MM, first and past-the-last microsecond) of the UTC month before ``now``'s."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (first - dt.timedelta(days=1)).replace(day=1)
    return start.strftime("%Y-%m"), int(start.timestamp() * 1_000_000), int(first.timestamp() * 1_000_000)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass
class Seeded:
    year_month: str
    month_start_us: int
    month_end_us: int
    record_buckets: dict[int, str]  # size -> bucket name
    object_buckets: dict[int, str]
    availability_checksums: list[str]
    seconds: float = 0.0
    rows: int = 0


class Seeder:
    """Fills the workspace's database with COPY; ids are taken past the sequences, which are moved after."""

    def __init__(self, url: str, sizes: tuple[int, ...], objects: tuple[int, ...], buckets: int,
                 other_records: int, log: Callable[[str], None]):
        self.url = url
        self.sizes = sizes
        self.objects = objects
        self.buckets = buckets
        self.other_records = other_records
        self.log = log

    def seed(self) -> Seeded:
        began = time.monotonic()
        year_month, start_us, end_us = month_before(dt.datetime.now(dt.UTC))
        conn = psycopg2.connect(self.url, application_name="bench-scale-seed")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM storage_locations WHERE name = %s", (LOCATION,))
                location_id = cur.fetchone()[0]
            names = self._buckets(conn)
            record_buckets = {size: f"records-{size}" for size in self.sizes}
            object_buckets = {size: f"objects-{size}" for size in self.objects}
            rows = self._read_records(conn, names, record_buckets, year_month, start_us, end_us)
            rows += self._traffic(conn, names, record_buckets, year_month)
            checksums, objects_rows = self._objects(conn, names, object_buckets, location_id)
            rows += objects_rows
            self.log("VACUUM ANALYZE")
            conn.autocommit = True
            with conn.cursor() as cur:
                for table in ("buckets", "read_records", "bucket_traffic", "files", "file_copies", "objects"):
                    cur.execute(f"VACUUM ANALYZE {table}")
        finally:
            conn.close()
        largest = object_buckets[max(self.objects)]
        sample = random.Random(14).sample(checksums[largest], min(AVAILABILITY_CHECKSUMS, len(checksums[largest])))
        return Seeded(year_month, start_us, end_us, record_buckets, object_buckets, sample,
                      time.monotonic() - began, rows)

    def _buckets(self, conn: Any) -> dict[str, int]:
        """The sized buckets and as many others as make ``buckets`` in all (with ``bench``): name -> id."""
        sized = [f"records-{s}" for s in self.sizes] + [f"objects-{s}" for s in self.objects]
        others = [f"other-{i:04d}" for i in range(max(0, self.buckets - 1 - len(sized)))]
        now = dt.datetime.now(dt.UTC).isoformat()
        copy_rows(conn, "buckets", "name, owner, visibility, charged_read_quota, free_read_quota, "
                  "monthly_free_read_quota, created_at",
                  (f"{name}\towner\tpublic-read\t{1 << 40}\t0\t0\t{now}\n" for name in sized + others))
        with conn.cursor() as cur:
            cur.execute("SELECT name, id FROM buckets")
            return dict(cur.fetchall())

    def _read_records(self, conn: Any, names: dict[str, int], record_buckets: dict[int, str], year_month: str,
                      start_us: int, end_us: int) -> int:
        span = end_us - start_us
        plan = [(names[name], size) for size, name in record_buckets.items()]
        plan += [(bucket_id, self.other_records) for name, bucket_id in names.items() if name.startswith("other-")]
        total = sum(count for _, count in plan)
        self.log(f"COPY {total:,} read records into {len(plan)} buckets")
        with conn.cursor() as cur:
            cur.execute("SELECT nextval(pg_get_serial_sequence('read_records', 'id'))")
            first_id = cur.fetchone()[0]

        def rows() -> Iterator[str]:
            next_id = first_id
            for bucket_id, count in plan:
                for i in range(count):
                    # id order is not time order: the bucket's records of one page sit on scattered pages
                    ts = start_us + int((i * GOLDEN) % 1.0 * span)
                    obj = i % 997
                    yield (f"{next_id}\t{bucket_id}\t{year_month}\tdata/object-{obj}.bin\t{obj + 1}\t"
                           f"{obj:064x}\treader-{i % 13}\t{ts}\t4096\t4096\t0\t0\n")
                    next_id += 1

        # the plain indexes (the migrations' definitions, read back) are built once after the load, not
        # row by row: ten million random insertions into a B-tree take minutes longer than one build
        with conn.cursor() as cur:
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'read_records' AND indexname "
                        "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'read_records'::regclass)")
            indexes = cur.fetchall()
            for name, _definition in indexes:
                cur.execute(f'DROP INDEX "{name}"')
        copy_rows(conn, "read_records", "id, bucket_id, year_month, object_name, object_id, checksum, account, "
                  "timestamp_us, read_size, charged_size, monthly_free_size, free_size", rows())
        self.log(f"index build: {', '.join(name for name, _ in indexes)}")
        with conn.cursor() as cur:
            for _name, definition in indexes:
                cur.execute(definition)
            cur.execute("SELECT setval(pg_get_serial_sequence('read_records', 'id'), %s)", (first_id + total,))
        conn.commit()
        return total

    def _traffic(self, conn: Any, names: dict[str, int], record_buckets: dict[int, str], year_month: str) -> int:
        copy_rows(conn, "bucket_traffic", "bucket_id, year_month, charged_quota_size, charged_consumed_size, "
                  "monthly_free_quota_size, monthly_free_consumed_size, free_quota_remaining, free_consumed_size",
                  (f"{names[name]}\t{year_month}\t{1 << 40}\t{size * 4096}\t0\t0\t0\t0\n"
                   for size, name in record_buckets.items()))
        return len(record_buckets)

    def _objects(self, conn: Any, names: dict[str, int], object_buckets: dict[int, str],
                 location_id: int) -> tuple[dict[str, list[str]], int]:
        now = dt.datetime.now(dt.UTC).isoformat()
        digest = "\\\\x" + "00" * 32  # one block's digest, COPY text format of a bytea
        checksums = {name: [sha256_hex(f"{name}/{i}") for i in range(size)] for size, name in object_buckets.items()}
        total = sum(len(c) for c in checksums.values())
        self.log(f"COPY {total:,} files, copies and objects into {len(object_buckets)} buckets")
        copy_rows(conn, "files", "checksum, size, piece_size, piece_count, block_size, block_digests, block_hash, "
                  "md5, created_at",
                  (f"{c}\t4096\t4096\t1\t4096\t{digest}\tblake3\t{c[:32]}\t{now}\n"
                   for listed in checksums.values() for c in listed))
        copy_rows(conn, "file_copies", "checksum, location_id, state, created_at, updated_at",
                  (f"{c}\t{location_id}\tstored\t{now}\t{now}\n" for listed in checksums.values() for c in listed))
        copy_rows(conn, "objects", "bucket_id, key, checksum, content_type, created_at, last_modified_weak, s3_etag",
                  (f"{names[name]}\tobj-{c[:24]}\t{c}\tapplication/octet-stream\t{now}\tf\t{c[:32]}\n"
                   for name, listed in checksums.items() for c in listed))
        return checksums, 3 * total


# --------------------------------------------------------------------------------------------- timing


def schedstat_ns(pid: int) -> int:
    """CPU time of ``pid``'s main thread in ns (/proc/<pid>/schedstat), else /proc/<pid>/stat's ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return int(cpu_seconds(pid) * 1e9)


@dataclasses.dataclass
class Probe:
    """One measured request: its name, the size it is measured at, what is sent, how the answer is checked."""

    measurement: str
    size: int
    url: str
    check: Callable[[requests.Response], str | None]  # None when the answer is right, else what is wrong
    params: dict[str, Any] | None = None
    body: Any = None  # a POST of this JSON when given, else a GET
    who: str = "admin"  # whose token: admin or user
    target: str = "flat"  # "flat" (ratio to the smallest size) or "availability" (p99 < 50 ms)
    times_ms: list[float] = dataclasses.field(default_factory=list)
    worker_ns: int = 0
    database_ns: int = 0

    def send(self, session: requests.Session) -> requests.Response:
        if self.body is not None:
            return session.post(self.url, params=self.params, json=self.body, timeout=TIMEOUT)
        return session.get(self.url, params=self.params, timeout=TIMEOUT)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    def row(self) -> dict[str, Any]:
        n = len(self.times_ms)
        return {"measurement": self.measurement, "size": self.size, "samples": n,
                "p50_ms": statistics.median(self.times_ms), "p99_ms": self.percentile(0.99),
                "worker_cpu_ms": self.worker_ns / n / 1e6, "database_cpu_ms": self.database_ns / n / 1e6,
                "target": self.target}


def _expect_page(field: str, count: int, first_at_least: Callable[[dict], bool] | None = None
                 ) -> Callable[[requests.Response], str | None]:
    def check(response: requests.Response) -> str | None:
        if response.status_code != 200:
            return f"status {response.status_code}: {response.text[:500]}"
        items = response.json()[field]
        if len(items) != count:
            return f"{len(items)} {field} instead of {count}"
        if first_at_least is not None and not first_at_least(items[0]):
            return f"the page starts at the wrong place: {items[0]}"
        return None
    return check


class ScaleBenchmark:
    def __init__(self, workspace: Workspace, sizes: tuple[int, ...] = DEFAULT_SIZES,
                 objects: tuple[int, ...] = DEFAULT_OBJECTS, samples: int = DEFAULT_SAMPLES,
                 buckets: int = DEFAULT_BUCKETS, other_records: int = DEFAULT_OTHER_RECORDS,
                 profile_dir: Path | None = None):
        self.workspace = workspace
        self.sizes = tuple(sorted(sizes))
        self.objects = tuple(sorted(objects))
        self.samples = samples
        self.buckets = buckets
        self.other_records = other_records
        self.profile_dir = profile_dir

    @staticmethod
    def log(text: str) -> None:
        print(f"scale: {text}", flush=True)

    def run(self) -> dict[str, Any]:
        seeded = Seeder(self.workspace.database.url, self.sizes, self.objects, self.buckets, self.other_records,
                        self.log).seed()
        self.log(f"seeded {seeded.rows:,} rows in {seeded.seconds:.0f} s")
        secret = os.urandom(32).hex()
        tokens_env = {**self.workspace.env, "STORAGE_JWT_SECRET": secret}
        admin_token = self._token(tokens_env, "bench-admin", "admin")
        user_token = self._token(tokens_env, "bench-reader")
        with self.workspace.service("storage", STORAGE_AUTH_DISABLED="0", STORAGE_JWT_SECRET=secret,
                                    PGAPPNAME=APP_NAME) as service:
            admin = requests.Session()
            admin.headers["Authorization"] = f"Bearer {admin_token}"
            user = requests.Session()
            user.headers["Authorization"] = f"Bearer {user_token}"
            probes = self.probes(service, admin, seeded)
            probes += self.availability_probes(service, seeded)
            self.measure(service, probes, {"admin": admin, "user": user})
            if self.profile_dir is not None:
                self.profile(service, probes, {"admin": admin, "user": user})
        results = [p.row() for p in probes]
        return {"results": results, "ratios": ratios(results), "seeded": seeded, "samples": self.samples,
                "buckets": self.buckets, "other_records": self.other_records}

    def _token(self, env: dict[str, str], sub: str, *roles: str) -> str:
        argv = [str(bin_dir() / "storage-admin"), "token", "issue", "--sub", sub, "--ttl", "86400"]
        argv += [arg for role in roles for arg in ("--role", role)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"storage-admin token issue failed: {done.stdout}{done.stderr}")
        return done.stdout.strip()

    def probes(self, service: Service, admin: requests.Session, seeded: Seeded) -> list[Probe]:
        start, end = seeded.month_start_us, seeded.month_end_us
        middle = (start + end) // 2
        day = 86_400 * 1_000_000
        probes: list[Probe] = []
        for size, bucket in seeded.record_buckets.items():
            records = service.url(f"/api/v1/buckets/{bucket}/read-records")
            found = service.expect(admin.get(records, params={"start_timestamp_us": middle, "end_timestamp_us": end,
                                                              "max_records": 1}, timeout=TIMEOUT), 200).json()
            cursor = found["next_cursor"]
            if cursor is None:
                raise BenchError(f"no record after the middle of the month in {bucket}")
            month = {"start_timestamp_us": start, "end_timestamp_us": end, "max_records": PAGE}
            window = {"start_timestamp_us": middle, "end_timestamp_us": middle + day, "max_records": PAGE}
            page = _expect_page("read_records", PAGE)
            probes += [
                Probe("read-records: first page", size, records, page, month),
                Probe("read-records: cursor in the middle of the month", size, records,
                      _expect_page("read_records", PAGE, lambda r: r["timestamp_us"] >= middle),
                      {**month, "cursor": cursor}),
                Probe("read-records: one-day window", size, records, page, window),
                Probe("read-quota", size, service.url(f"/api/v1/buckets/{bucket}/read-quota"),
                      lambda r, n=size: None if r.status_code == 200 and r.json()["charged_consumed_size"] == n * 4096
                      else f"status {r.status_code}: {r.text[:500]}", {"year_month": seeded.year_month}),
            ]
        for size, bucket in seeded.object_buckets.items():
            listing = service.url(f"/api/v1/buckets/{bucket}/objects")
            found = service.expect(admin.get(listing, params={"prefix": "obj-8", "limit": 1}, timeout=TIMEOUT),
                                   200).json()
            if found["next_cursor"] is None:
                raise BenchError(f"no two objects under obj-8 in {bucket}: too few objects for a middle cursor")
            cursor = found["next_cursor"]
            probes += [
                Probe("objects: first page", size, listing, _expect_page("objects", PAGE), {"limit": PAGE}),
                Probe("objects: cursor in the middle", size, listing,
                      _expect_page("objects", PAGE, lambda o: o["key"] > "obj-8"), {"limit": PAGE, "cursor": cursor}),
            ]
        return probes

    def availability_probes(self, service: Service, seeded: Seeded) -> list[Probe]:
        url = service.url("/api/v1/files/availability")
        body = {"checksums": seeded.availability_checksums}
        count = len(seeded.availability_checksums)

        def check(response: requests.Response) -> str | None:
            if response.status_code != 200:
                return f"status {response.status_code}: {response.text[:500]}"
            states = response.json()
            if len(states) != count or not all(s["available"] and s["tier"] == "hot" for s in states):
                return f"not every file is available on hot: {states[:3]}"
            return None

        size = max(seeded.object_buckets)
        return [Probe(f"availability of {count:,} checksums ({who})", size, url, check, body=body, who=who,
                      target="availability") for who in ("admin", "user")]

    def _session(self, probe: Probe, sessions: dict[str, requests.Session]) -> requests.Session:
        return sessions[probe.who]

    def measure(self, service: Service, probes: list[Probe], sessions: dict[str, requests.Session]) -> None:
        worker = service.worker_pid()
        backends = self._backends()
        for probe in probes:  # warm-up, and every answer checked once
            session = self._session(probe, sessions)
            for _ in range(WARMUP):
                problem = probe.check(probe.send(session))
                if problem:
                    raise BenchError(f"{probe.measurement} at {probe.size:,}: {problem}\n{service.log_tail()}")
        backends = self._backends() or backends
        self.log(f"measuring {len(probes)} requests x {self.samples} rounds (worker {worker}, "
                 f"PostgreSQL backends {backends})")
        for _ in range(self.samples):
            for probe in probes:
                session = self._session(probe, sessions)
                w0, d0 = schedstat_ns(worker), sum(schedstat_ns(b) for b in backends)
                began = time.perf_counter()
                response = probe.send(session)
                elapsed = time.perf_counter() - began
                w1, d1 = schedstat_ns(worker), sum(schedstat_ns(b) for b in backends)
                problem = probe.check(response)
                if problem:
                    raise BenchError(f"{probe.measurement} at {probe.size:,}: {problem}")
                probe.times_ms.append(elapsed * 1000)
                probe.worker_ns += w1 - w0
                probe.database_ns += d1 - d0
            if set(self._backends()) - set(backends):
                backends = self._backends()

    def _backends(self) -> list[int]:
        conn = psycopg2.connect(self.workspace.database.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = %s", (APP_NAME,))
                return sorted(row[0] for row in cur.fetchall())
        finally:
            conn.close()

    def profile(self, service: Service, probes: list[Probe], sessions: dict[str, requests.Session]) -> None:
        """py-spy on the worker while each measurement repeats at its largest size for 5 s (figures not kept)."""
        import shutil

        py_spy = shutil.which("py-spy", path=str(bin_dir())) or shutil.which("py-spy")
        if py_spy is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        largest: dict[str, int] = {}
        for probe in probes:
            largest[probe.measurement] = max(largest.get(probe.measurement, 0), probe.size)
        for probe in probes:
            if probe.size != largest[probe.measurement]:
                continue
            slug = "".join(c if c.isalnum() else "-" for c in probe.measurement).strip("-")
            out = self.profile_dir / f"scale-{slug}-{probe.size}.txt"
            spy = subprocess.Popen([py_spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(out),
                                    "-p", str(service.worker_pid())], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
            time.sleep(1)
            session = self._session(probe, sessions)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                probe.send(session)
            spy.send_signal(2)
            spy.wait(30)
            self.log(f"profile of {probe.measurement} at {probe.size:,}: {out}")


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per measurement: p99 (and p50) at the largest size over the smallest (target <= 2); availability's
    p99 against its 50 ms."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_name.setdefault(r["measurement"], []).append(r)
    out = []
    for name, rows in by_name.items():
        rows.sort(key=lambda r: r["size"])
        small, large = rows[0], rows[-1]
        if rows[0]["target"].startswith("availability"):
            out.append({"measurement": name, "kind": "p99", "value": large["p99_ms"],
                        "target": f"< {AVAILABILITY_TARGET_MS:.0f} ms", "ok": large["p99_ms"] < AVAILABILITY_TARGET_MS,
                        "detail": f"p50 {large['p50_ms']:.1f} ms, CPU {large['worker_cpu_ms']:.1f} ms worker "
                                  f"+ {large['database_cpu_ms']:.1f} ms PostgreSQL per request"})
            continue
        p99 = large["p99_ms"] / small["p99_ms"]
        p50 = large["p50_ms"] / small["p50_ms"]
        out.append({"measurement": name, "kind": f"p99 {large['size']:,} / {small['size']:,}", "value": p99,
                    "target": f"<= {FLAT_TARGET:g}", "ok": p99 <= FLAT_TARGET,
                    "detail": f"p50 ratio {p50:.2f}; p99 {small['p99_ms']:.1f} -> {large['p99_ms']:.1f} ms"})
    return out
