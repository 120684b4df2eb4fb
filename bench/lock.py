"""`python -m bench.run --only lock`: the hot bucket's month row, with 1, 2 and 4 downloader instances.

Every charged read of a bucket updates the bucket's month row in ``bucket_traffic`` under its lock
(``services/quota.py``): the reads that arrive together in one worker are decided by one transaction
(a *batch*), and the batches of every worker of every instance queue on that one row. This suite runs
1, 2 and 4 downloader instances (2 gevent workers each) on one PostgreSQL database, all reading the
same 4 KiB object of one bucket with wrk (the same number of connections in all, split between the
instances), and reads from each instance's ``/metrics`` the histograms the charges observe:

- ``storage_charge_batch_size``: reads per batch (mean = sum / count);
- ``storage_charge_lock_seconds``: how long a batch holds the row, from the moment the lock is granted
  (the first round trip returns) to its commit (the second returns).

The *row-busy fraction* is the sum of the hold times of all instances over the run's wall time: the
row is held by one batch at a time, so it is at most 1, and the charged reads per second of one bucket
cannot exceed ``mean batch / mean hold`` (the rate at which the row would serve batches if it were
never idle). A floor run (one instance, one connection: batches of one) and the runs under load give
hold times at several batch sizes, fitted as ``hold = a + b x batch``: the ceiling of a bucket with
batches of ``n`` is ``n / (a + b n)``, at most ``1 / b`` however large the batches.

Not part of plain ``make bench`` (no target; it is the measurement behind docs/deployment.md).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg2
import requests

from bench.harness import BenchError, Service, Workspace
from bench.throughput import (
    BUCKET,
    QUOTA,
    SMALL_KEY,
    SMALL_SIZE,
    TIMEOUT,
    WRK_DONE,
    WrkResult,
    check_wrk,
    ensure_tools,
    parse_wrk,
)
from storage_core.services.quota import BEGIN_AND_LOCK_MONTH, CONSUME_RECORD_COMMIT, RECORD_VALUES
from storage_core.timeutil import year_month_of

INSTANCES = (1, 2, 4)
WORKERS = 2  # gevent workers per instance
CONNECTIONS = 64  # wrk connections in all, split evenly between the instances
# 4 instances x 2 workers x 2 engines x 2 = 32 connections at most: a worker resolves one batch at a time and
# charges one batch per bucket at a time, so one hot bucket needs no more (and the server is shared)
POOL_SIZE = "2"
FLOOR_BATCHES = (1, 8, 32)  # batch sizes of the database floor
HISTOGRAMS = ("storage_charge_lock_seconds", "storage_charge_batch_size")


@dataclass
class LockRun:
    """One measurement: ``instances`` downloaders reading the hot object together."""

    name: str
    instances: int
    connections: int
    duration_s: float
    reads: int  # complete responses counted by the wrk processes
    charged: int  # read records of the object's full size written during the run
    batches: float
    batch_reads: float  # sum of the batch sizes (reads decided, admitted or refused)
    held_s: float  # sum of the hold times

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.duration_s

    @property
    def mean_batch(self) -> float:
        return self.batch_reads / self.batches if self.batches else 0.0

    @property
    def mean_hold_s(self) -> float:
        return self.held_s / self.batches if self.batches else 0.0

    @property
    def busy(self) -> float:
        return self.held_s / self.duration_s

    @property
    def ceiling(self) -> float:
        """Reads/s the row would allow at this batch size if it were never idle."""
        return self.mean_batch / self.mean_hold_s if self.mean_hold_s else 0.0

    def as_row(self) -> list[str]:
        return [self.name, str(self.instances), f"{self.instances * WORKERS}", str(self.connections),
                f"{self.reads_per_s:,.0f}", f"{self.mean_batch:.1f}", f"{self.mean_hold_s * 1000:.2f} ms",
                f"{self.busy * 100:.0f} %", f"{self.ceiling:,.0f}"]


HEADER = ["run", "instances", "workers", "wrk connections", "reads/s", "mean batch", "mean hold",
          "row busy", "ceiling at this batch (batch / hold)"]


def histogram_totals(text: str) -> dict[str, float]:
    """``NAME_sum`` and ``NAME_count`` of the charge histograms in a /metrics text (0 when absent)."""
    totals = {f"{name}_{part}": 0.0 for name in HISTOGRAMS for part in ("sum", "count")}
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{[^}]*\})? (\S+)$", line)
        if match and match.group(1) in totals:
            totals[match.group(1)] += float(match.group(2))
    return totals


class LockBenchmark:
    def __init__(self, workspace: Workspace, duration: int = 15):
        self.workspace = workspace
        self.duration = duration
        self.tools: dict[str, str] = {}
        self.script = workspace.root / "wrk-lock.lua"
        self.database: Any = None  # the benchmark's own connection, during run()

    def prepare(self) -> None:
        self.tools = ensure_tools(("wrk",))
        self.script.write_text(WRK_DONE)
        body = bytes(range(256)) * (SMALL_SIZE // 256)
        with self.workspace.service("storage", STORAGE_LOG_LEVEL="WARNING") as service:
            self.workspace.grant_read_quota(service, QUOTA)
            response = requests.put(service.url(f"/api/v1/buckets/{BUCKET}/objects/{SMALL_KEY}"), data=body,
                                    headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
            service.expect(response, 200, 201)

    def metrics(self, services: list[Service]) -> dict[str, float]:
        totals: dict[str, float] = {}
        for service in services:
            text = requests.get(service.url("/metrics"), timeout=TIMEOUT).text
            for name, value in histogram_totals(text).items():
                totals[name] = totals.get(name, 0.0) + value
        return totals

    def wrk(self, url: str, threads: int, connections: int, duration: float) -> WrkResult:
        argv = [self.tools["wrk"], f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s",
                "--latency", "-s", str(self.script), url]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 120)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        result = parse_wrk("downloader", url, threads, connections, done.stdout + done.stderr)
        check_wrk(result)
        return result

    def charged(self, start_us: int, end_us: int) -> int:
        with self.database.cursor() as cur:
            cur.execute("SELECT count(*) FROM read_records WHERE timestamp_us >= %s AND timestamp_us < %s "
                        "AND read_size = %s", (start_us, end_us, SMALL_SIZE))
            return int(cur.fetchone()[0])

    def measure(self, name: str, services: list[Service], connections: int, duration: float) -> LockRun:
        """wrk against every instance at once (``connections`` in all); the histograms' growth during it."""
        per_instance = max(1, connections // len(services))
        threads = max(1, min(2, per_instance // 8))
        urls = [s.url(f"/api/v1/buckets/{BUCKET}/objects/{SMALL_KEY}") for s in services]
        with ThreadPoolExecutor(len(urls)) as pool:  # warm-up: pools filled, first batches done
            list(pool.map(lambda u: self.wrk(u, threads, per_instance, 2), urls))
        before = self.metrics(services)
        start_us = time.time_ns() // 1000
        started = time.monotonic()
        with ThreadPoolExecutor(len(urls)) as pool:
            results = list(pool.map(lambda u: self.wrk(u, threads, per_instance, duration), urls))
        wall = time.monotonic() - started
        time.sleep(0.5)
        after = self.metrics(services)
        charged = self.charged(start_us, time.time_ns() // 1000)
        reads = sum(r.requests for r in results)
        if charged < reads:
            raise BenchError(f"{name}: wrk counted {reads} complete reads but only {charged} read records")
        # wrk's own duration (from its first connection to its end), the longest of the instances' runs
        duration_s = min(wall, max(r.duration_s for r in results))
        delta = {k: after[k] - before.get(k, 0.0) for k in after}
        run = LockRun(name, len(services), per_instance * len(services), duration_s, reads, charged,
                      delta["storage_charge_batch_size_count"], delta["storage_charge_batch_size_sum"],
                      delta["storage_charge_lock_seconds_sum"])
        if abs(run.batches - delta["storage_charge_lock_seconds_count"]) > 0.5:
            raise BenchError(f"{name}: {run.batches} batch sizes but "
                             f"{delta['storage_charge_lock_seconds_count']} hold times observed")
        print("  ".join(f"{h}: {v}" for h, v in zip(HEADER, run.as_row(), strict=True)), flush=True)
        return run

    def run(self) -> dict[str, Any]:
        # one connection of the benchmark's own for its queries, opened before the services take theirs
        self.database = psycopg2.connect(self.workspace.database.url)
        self.database.autocommit = True
        try:
            return self._run()
        finally:
            self.database.close()

    def _run(self) -> dict[str, Any]:
        self.prepare()
        runs: list[LockRun] = []
        started = datetime.datetime.now(datetime.UTC)
        for instances in INSTANCES:
            with contextlib.ExitStack() as stack:
                services = [stack.enter_context(self.workspace.service(
                    "downloader", workers=WORKERS, STORAGE_LOG_LEVEL="WARNING", STORAGE_DB_POOL_SIZE=POOL_SIZE,
                    PGAPPNAME=f"bench-lock-{i}")) for i in range(instances)]
                if instances == 1:
                    # the floor: one connection, so batches of one and no wait for the lock
                    runs.append(self.measure("floor (1 connection)", services, 1, min(self.duration, 5)))
                runs.append(self.measure(f"{instances} instance{'s' if instances > 1 else ''}", services,
                                         CONNECTIONS, self.duration))
        floor = self.database_floor()
        return {"runs": runs, "fit": fit(runs), "floor": floor, "floor_fit": fit_points(floor),
                "started": started, "load_before": os.getloadavg(), "duration": self.duration}

    def database_floor(self, sizes: tuple[int, ...] = FLOOR_BATCHES, seconds: float = 2.0
                       ) -> list[tuple[float, float]]:
        """(batch size, mean hold s) of the charge's own two round trips (``services/quota.py``'s statements)
        sent by one client in a loop, with nothing else between them: what PostgreSQL needs per batch."""
        points = []
        with self.database.cursor() as cur:
            cur.execute("SELECT id FROM buckets WHERE name = %s", (BUCKET,))
            bucket_id = cur.fetchone()[0]
            year_month = year_month_of(time.time_ns() // 1000)
            for size in sizes:
                held, batches, deadline = 0.0, 0, time.monotonic() + seconds
                while time.monotonic() < deadline:
                    cur.execute(BEGIN_AND_LOCK_MONTH, (size, bucket_id, year_month))
                    ids = cur.fetchone()[-1]
                    locked = time.perf_counter()
                    values: list[Any] = [SMALL_SIZE * size, 0, 0, 0, bucket_id, year_month]
                    for record_id in ids:
                        values += [record_id, bucket_id, year_month, "floor", 0, "0" * 64, "bench",
                                   time.time_ns() // 1000, SMALL_SIZE, SMALL_SIZE, 0, 0]
                    cur.execute(CONSUME_RECORD_COMMIT.format(rows=", ".join([RECORD_VALUES] * size)),
                                tuple(values))
                    held += time.perf_counter() - locked
                    batches += 1
                points.append((float(size), held / batches))
                print(f"database floor: batches of {size}: {held / batches * 1000:.2f} ms held "
                      f"({batches} batches)", flush=True)
        return points


def fit(runs: list[LockRun]) -> tuple[float, float] | None:
    """Least squares ``hold = a + b x batch`` over the runs' means: (a, b) in seconds, or None."""
    return fit_points([(r.mean_batch, r.mean_hold_s) for r in runs if r.batches])


def fit_points(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    if len(points) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def summary_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    if run["floor_fit"] is not None:
        a, b = run["floor_fit"]
        lines.append("database floor (the two round trips alone, one client): "
                     + ", ".join(f"batch {n:.0f}: {h * 1000:.2f} ms" for n, h in run["floor"])
                     + f"; hold = {a * 1000:.2f} ms + {b * 1000:.3f} ms x batch")
        if b > 0:
            lines.append(f"ceiling of one bucket from the floor: n / (a + b n) reads/s with batches of n (batch "
                         f"32: {32 / (a + 32 * b):,.0f}), at most 1 / b = {1 / b:,.0f} however large the batches")
    if run["fit"] is not None:
        a, b = run["fit"]
        lines.append(f"fit over the service runs' means: hold = {a * 1000:.2f} ms + {b * 1000:.3f} ms x batch "
                     "(includes the holding worker's event-loop wait between its two round trips)")
    best = max(run["runs"], key=lambda r: r.ceiling)
    lines.append(f"highest ceiling measured: {best.ceiling:,.0f} reads/s ({best.name}: batches of "
                 f"{best.mean_batch:.1f} held {best.mean_hold_s * 1000:.2f} ms)")
    return lines
