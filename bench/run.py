"""`python -m bench.run` (what `make bench` calls): run the benchmarks, print tables, record them in docs/benchmarks.md.

Suites, all by default: ``throughput`` (wrk against the downloader service, nginx and a bare
Flask app; installs nginx and wrk with apt-get when missing) and ``memory`` (worker growth during a
big upload and big downloads), ``hashes`` (block hashes per core) and, last since it seeds tens of millions
of rows, ``scale`` (listing pages and look-ups as the tables grow, bench/scale.py; ``--scale-sizes`` and
friends make a quick run). ``--only`` picks one suite (``throughput``, ``memory``, ``hashes``, ``scale``) or one memory
measurement (``upload``, ``download``, ``s3-upload``); ``--only throughput:big,range`` picks throughput
scenarios (``s3-small``, ``s3-big`` and ``s3-signed`` are the S3 API's; ``make bench-s3`` runs them and
``s3-upload``); ``slow`` is the many-slow-clients suite (bench/slow.py: 1,500 slow downloads of a 64 MiB
object from one downloader instance). ``--only lock`` runs the hot-bucket lock measurement (``bench/lock.py``:
1, 2 and 4 downloader instances on one bucket), which is not part of a plain run.

Each suite writes its own marked section of docs/benchmarks.md (``<!-- NAME:begin -->`` ...
``<!-- NAME:end -->``); the rest of the file is left as it is. Exit status: 0 when every target is
met, 1 when a figure misses its target, 2 when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import hashes, lock
from bench.harness import REPO, BenchError, MiB, Workspace, machine
from bench.memory import MemoryBenchmark
from bench.scale import (
    DEFAULT_BUCKETS,
    DEFAULT_OBJECTS,
    DEFAULT_OTHER_RECORDS,
    DEFAULT_SAMPLES,
    DEFAULT_SIZES,
    ScaleBenchmark,
)
from bench.slow import RCVBUF, SlowBenchmark
from bench.slow import rows as slow_rows
from bench.throughput import SCENARIOS, WARMUP_S, ThroughputBenchmark, cpu_per_request, database_per_request, fmt_us

DOCS = REPO / "docs" / "benchmarks.md"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / MiB:.1f} MiB"


def memory_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["measurement", "service", "transferred", "time", "throughput", "worker CPU", "worker RSS before",
              "worker peak (VmHWM)", "growth", "target", "result"]
    rows = [[r["name"], f"{r['profile']}-service", f"{r['transferred'] / MiB:.0f} MiB", f"{r['elapsed_s']:.1f} s",
             f"{r['mib_per_s']:.0f} MiB/s", f"{r['worker_cpu_s']:.1f} s", _mib(r["baseline_rss"]),
             _mib(r["hwm_after"]), _mib(r["growth"]), f"< {r['target'] / MiB:.0f} MiB",
             "ok" if r["ok"] else "**over target**"] for r in results]
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def command_line(argv: Sequence[str]) -> str:
    return f'BENCH_ARGS="{shlex.join(argv)}" make bench' if argv else "make bench"


def machine_line() -> str:
    info = machine()
    return (f"{info['nproc']} CPUs ({info['cpu_model']}), {info['mem_total'] / 1024**3:.1f} GiB RAM, "
            f"Linux, Python {info['python']}")


def memory_section(results: list[dict[str, Any]], args: argparse.Namespace, argv: Sequence[str]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header, rows = memory_rows(results)
    return "\n".join([
        f"Measured {now} with `{command_line(argv)}` on {machine_line()}.",
        f"Object of {args.size_mib} MiB; one gunicorn gevent worker (`STORAGE_WORKERS=1`), PostgreSQL, "
        f"one local location; each line is a fresh service process.",
        "",
        markdown_table(header, rows),
    ])


def update_section(path: Path, name: str, body: str) -> None:
    """Replace what lies between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n## {name.capitalize()}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def throughput_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["measurement", "server", "wrk", "requests", "req/s", "MiB/s", "latency p50", "latency p99",
              "server CPU per request", "other processes' CPU", "read records (charged)",
              "PostgreSQL per request"]
    rows = []
    for scenario in run["scenarios"]:
        for r in run["results"][scenario.name]:
            charged = (f"{r.charged_reads} ({r.charged_bytes / MiB:,.0f} MiB)" if r.charged_reads is not None
                       else "-")
            rows.append([scenario.title, r.server, f"{r.wrk_args} -d{run['duration']}s", str(r.requests),
                         f"{r.req_per_s:,.0f}", f"{r.mib_per_s:,.1f}", fmt_us(r.p50_us), fmt_us(r.p99_us),
                         cpu_per_request(r), f"{r.cpu.other_cpus:.2f} CPUs", charged, database_per_request(r)])
    return header, rows


RATIO_METRICS = {"mib_per_s": "MiB/s", "req_per_s": "req/s", "cpu_ms_per_mib": "ms server CPU per MiB"}


def ratio_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["measurement", "ratio", "downloader", "reference", "target", "result"]
    rows = []
    for r in run["ratios"]:
        unit = RATIO_METRICS[r["metric"]]
        digits = 3 if r["metric"] == "cpu_ms_per_mib" else 1
        rows.append([f"{r['title']}: {unit} downloader / {r['reference']}", f"{r['ratio']:.3f}",
                     f"{r['downloader']:,.{digits}f} {unit}", f"{r['reference_value']:,.{digits}f} {unit}",
                     "-" if r["target"] is None else f"{'>=' if r['at_least'] else '<='} {r['target']}",
                     "-" if r["target"] is None else ("ok" if r["ok"] else "**missed**")])
    return header, rows


def code_revision() -> str:
    """The commit measured, ``-dirty`` when files other than docs/ (which the benchmark writes) changed."""
    described = subprocess.run(["git", "-C", str(REPO), "describe", "--always"], capture_output=True,
                               text=True, check=False)
    if described.returncode != 0 or not described.stdout.strip():
        return "unknown"
    changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", ".", ":(exclude)docs"],
                             capture_output=True, text=True, check=False)
    return described.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")


def throughput_section(run: dict[str, Any], argv: Sequence[str]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in run["load_before"])
    workers = run["workers"]
    return "\n".join([
        f"Measured {now} with `{command_line(argv)}` on {machine_line()} (load average before the run: {load}); "
        f"code at `{run['revision']}`.",
        f"{run['versions']['nginx'].removeprefix('nginx version: ')}, "
        f"{run['versions']['wrk'].split(' [')[0]} (Debian packages); {workers} workers "
        f"per server (`STORAGE_WORKERS={workers}`, `worker_processes {workers}`, `gunicorn -w {workers}`); wrk "
        f"with {run['threads']} threads, {run['duration']} s per line after a {WARMUP_S} s warm-up; no line "
        "counted an error or a non-2xx response. Columns as explained above.",
        "",
        markdown_table(*throughput_rows(run)),
        "",
        "Ratios, from the same run:",
        "",
        markdown_table(*ratio_rows(run)),
    ])


def run_hashes(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The block-hash suite: MiB/s per core of each integrity hash; never misses a target (context)."""
    results = hashes.measure()
    header = ["hash", "block", "MiB/s per core (CPU time)", "used for"]
    rows = [[r["hash"], _mib(r["block"]), f"{r['mib_s']:,.0f}",
             "new uploads" if r["default"] else "files stored before migration 0003"] for r in results]
    print(f"block hashes on {machine_line()}")
    print(text_table(header, rows))
    if not args.no_docs:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        update_section(DOCS, "hashes", "\n".join([
            f"Measured {date} with `{command_line(argv)}` on {machine_line()}.", "", markdown_table(header, rows)]))
    return 0


def run_lock(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The hot-bucket lock suite (``bench/lock.py``): figures for docs/deployment.md, no target."""
    print(f"hot-bucket lock: 1, 2 and 4 downloader instances on one bucket, on {machine_line()}", flush=True)
    try:
        with Workspace(keep=args.keep) as workspace:
            revision = code_revision()
            run = lock.LockBenchmark(workspace, args.duration).run()
    except BenchError as exc:
        print(f"lock benchmark failed: {exc}", file=sys.stderr)
        return 2
    rows = [r.as_row() for r in run["runs"]]
    print()
    print(text_table(lock.HEADER, rows))
    for line in lock.summary_lines(run):
        print(line)
    if not args.no_docs:
        load = ", ".join(f"{x:.2f}" for x in run["load_before"])
        update_section(DOCS, "lock", "\n".join([
            f"Measured {run['started']:%Y-%m-%d %H:%M UTC} with `{command_line(argv)}` on {machine_line()} "
            f"(load average before the run: {load}); code at `{revision}`; {run['duration']} s per line, "
            f"{lock.WORKERS} workers per instance, one PostgreSQL database.", "",
            markdown_table(lock.HEADER, rows), "", *(f"- {line}" for line in lock.summary_lines(run))]))
        print(f"\nrecorded in {DOCS.relative_to(REPO)}")
    return 0


def scale_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["measurement", "size", "p50", "p99", "worker CPU per request", "PostgreSQL CPU per request"]
    rows = [[r["measurement"], f"{r['size']:,}", f"{r['p50_ms']:.2f} ms", f"{r['p99_ms']:.2f} ms",
             f"{r['worker_cpu_ms']:.2f} ms", f"{r['database_cpu_ms']:.2f} ms"] for r in run["results"]]
    return header, rows


def scale_ratio_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["measurement", "figure", "value", "target", "result", "detail"]
    rows = [[r["measurement"], r["kind"], f"{r['value']:.2f}" + (" ms" if r["kind"] == "p99" else ""), r["target"],
             "ok" if r["ok"] else "**missed**", r["detail"]] for r in run["ratios"]]
    return header, rows


def scale_section(run: dict[str, Any], argv: Sequence[str]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    seeded = run["seeded"]
    load = ", ".join(f"{x:.2f}" for x in run["load_before"])
    return "\n".join([
        f"Measured {now} with `{command_line(argv)}` on {machine_line()} (load average before the run: {load}); "
        f"code at `{run['revision']}`.",
        f"{run['buckets']:,} buckets share the tables ({run['other_records']:,} read records in each bucket "
        f"that is not measured); {seeded.rows:,} rows seeded with COPY in {seeded.seconds:.0f} s, then VACUUM "
        f"ANALYZE. One storage-service worker, one request at a time, {run['samples']} rounds over every line; "
        "sizes are read records (read-records, read-quota) or objects (objects, availability) in the bucket.",
        "",
        markdown_table(*scale_rows(run)),
        "",
        "Ratios, from the same run:",
        "",
        markdown_table(*scale_ratio_rows(run)),
    ])


def sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected counts >= 1, got {text!r}")
    return values


def run_scale(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The scale suite; its exit status (0, 1 or 2)."""
    import os

    try:
        with Workspace(keep=args.keep) as workspace:
            revision = code_revision()
            load = os.getloadavg()
            run = ScaleBenchmark(workspace, args.scale_sizes, args.scale_objects, args.scale_samples,
                                 args.scale_buckets, args.scale_other_records, profile_dir=args.profile).run()
            run["revision"], run["load_before"] = revision, load
    except BenchError as exc:
        print(f"scale benchmark failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(text_table(*scale_rows(run)))
    print()
    print(text_table(*scale_ratio_rows(run)))
    if not args.no_docs:
        update_section(DOCS, "scale", scale_section(run, argv))
        print(f"\nrecorded in {DOCS.relative_to(REPO)}")
    missed = [r["measurement"] for r in run["ratios"] if not r["ok"]]
    if missed:
        print(f"scale target missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def run_slow(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The many-slow-clients suite (bench/slow.py); its exit status (0, 1 or 2)."""
    print(f"slow clients: {args.slow_clients} downloads of {args.slow_mib} MiB, on {machine_line()}", flush=True)
    try:
        with Workspace(keep=args.keep) as workspace:
            revision = code_revision()
            result = SlowBenchmark(workspace, args.slow_clients, args.slow_mib * MiB, args.slow_rate_kib * 1024).run()
    except BenchError as exc:
        print(f"slow-client benchmark failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(text_table(*slow_rows(result)))
    if not args.no_docs:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        update_section(DOCS, "slow", "\n".join([
            f"Measured {now} with `{command_line(argv)}` on {machine_line()}; code at `{revision}`.",
            f"{args.slow_clients:,} downloads of one {args.slow_mib} MiB object at once from one downloader-service "
            f"(`STORAGE_WORKERS=2`, `STORAGE_DB_POOL_SIZE=10`), each client reading at most "
            f"{args.slow_rate_kib} KiB/s through a {RCVBUF // 1024} KiB receive buffer (`SO_RCVBUF`).",
            "Growth is the peak of the two workers' summed VmRSS (sampled every 0.5 s) over their sum before.",
            "", markdown_table(*slow_rows(result))]))
        print(f"\nrecorded in {DOCS.relative_to(REPO)}")
    if not result["ok"]:
        missed = [name for name, ok in result["targets"].items() if not ok]
        print(f"slow clients: missed {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="SUITE",
                        help="run only this: throughput (or throughput:big,small,range), memory, hashes, lock, scale, "
                             "slow, or one "
                             "memory measurement: upload, download, s3-upload (with the native upload it is "
                             "compared with) (default: everything)")
    parser.add_argument("--size-mib", type=int, default=1024,
                        help="memory: size of the big object (default 1024)")
    parser.add_argument("--parallel", type=int, default=8,
                        help="simultaneous downloads of the parallel measurement (default 8; 1 skips it)")
    parser.add_argument("--download-service", choices=["storage", "downloader"], default="storage",
                        help="service profile serving the download measurements (default storage)")
    parser.add_argument("--duration", type=int, default=15, help="throughput: seconds per wrk run (default 15)")
    parser.add_argument("--throughput-mib", type=int, default=256,
                        help="throughput: size of the big object (default 256)")
    parser.add_argument("--quiet-wait", type=float, default=30, metavar="SECONDS",
                        help="throughput: before each run, wait up to SECONDS for the rest of the machine to use "
                             "less than a quarter of a CPU (default 30; 0: do not wait)")
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="throughput: repeat each downloader run under py-spy, stacks to DIR, print the top "
                             "functions by self time; memory: the same for one more big upload; scale: py-spy of the "
                             "worker while each line repeats at its largest size")
    parser.add_argument("--scale-sizes", type=sizes, default=DEFAULT_SIZES, metavar="N,N,...",
                        help="scale: read records in the measured buckets (default "
                             f"{','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--scale-objects", type=sizes, default=DEFAULT_OBJECTS, metavar="N,N,...",
                        help="scale: objects in the measured buckets (default "
                             f"{','.join(map(str, DEFAULT_OBJECTS))}); the largest gives the availability checksums")
    parser.add_argument("--scale-samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"scale: requests per line (default {DEFAULT_SAMPLES})")
    parser.add_argument("--scale-buckets", type=int, default=DEFAULT_BUCKETS,
                        help=f"scale: buckets sharing the tables (default {DEFAULT_BUCKETS})")
    parser.add_argument("--scale-other-records", type=int, default=DEFAULT_OTHER_RECORDS,
                        help=f"scale: read records of each bucket not measured (default {DEFAULT_OTHER_RECORDS})")
    parser.add_argument("--slow-clients", type=int, default=1500,
                        help="slow: simultaneous slow downloads (default 1500)")
    parser.add_argument("--slow-mib", type=int, default=64, help="slow: size of the object (default 64)")
    parser.add_argument("--slow-rate-kib", type=int, default=640,
                        help="slow: most KiB/s each client reads (default 640)")
    parser.add_argument("--no-docs", action="store_true", help=f"do not rewrite {DOCS.relative_to(REPO)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and database")
    return parser


def parse_only(only: str | None) -> tuple[bool, str | None, tuple[str, ...]]:
    """(run throughput?, memory selection or None to skip it ("all", "upload", "download"), scenarios).

    The hash suite runs with everything, or alone with ``--only hashes`` (see ``main``)."""
    if only is None:
        return True, "all", ()
    suite, _, names = only.partition(":")
    if suite == "throughput":
        scenarios = tuple(n for n in names.split(",") if n)
        known = {s.name for s in SCENARIOS}
        if set(scenarios) - known:
            raise ValueError(f"unknown throughput scenario(s) {sorted(set(scenarios) - known)}; "
                             f"expected {sorted(known)}")
        return True, None, scenarios
    if suite in ("memory", "upload", "download", "s3-upload") and not names:
        return False, "all" if suite == "memory" else suite, ()
    raise ValueError(f"--only {only}: expected throughput[:scenario,...], memory, hashes, scale, upload, download or "
                     "s3-upload")


def run_throughput(args: argparse.Namespace, argv: Sequence[str], scenarios: tuple[str, ...]) -> int:
    """The throughput suite; its exit status (0, 1 or 2)."""
    try:
        with Workspace(keep=args.keep) as workspace:
            revision = code_revision()  # before the run: the services load the code as it is now
            run = ThroughputBenchmark(workspace, args.throughput_mib * MiB, args.duration,
                                      profile_dir=args.profile, only=scenarios, quiet_wait=args.quiet_wait).run()
            run["revision"] = revision
    except BenchError as exc:
        print(f"throughput benchmark failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(text_table(*throughput_rows(run)))
    print()
    print(text_table(*ratio_rows(run)))
    if not args.no_docs:
        update_section(DOCS, "throughput", throughput_section(run, argv))
        print(f"\nrecorded in {DOCS.relative_to(REPO)}")
    missed = [r["title"] for r in run["ratios"] if not r["ok"]]
    if missed:
        print(f"throughput ratio under target: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def run_memory(args: argparse.Namespace, argv: Sequence[str], only: str) -> int:
    """The memory suite (``only``: all, upload or download); its exit status (0, 1 or 2)."""
    print(f"memory benchmarks: {args.size_mib} MiB object, on {machine_line()}", flush=True)
    try:
        with Workspace(keep=args.keep) as workspace:
            results = MemoryBenchmark(workspace, args.size_mib * MiB, args.profile).run(
                only=None if only == "all" else only, parallel=args.parallel,
                download_profile=args.download_service)
    except BenchError as exc:
        print(f"memory benchmark failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(text_table(*memory_rows(results)))
    if not args.no_docs:
        update_section(DOCS, "memory", memory_section(results, args, argv))
        print(f"\nrecorded in {DOCS.relative_to(REPO)}")
    missed = [r["name"] for r in results if not r["ok"]]
    if missed:
        print(f"over target: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if min(args.size_mib, args.parallel, args.duration, args.throughput_mib, args.slow_clients, args.slow_mib,
           args.slow_rate_kib) < 1:
        print("--size-mib, --parallel, --duration, --throughput-mib and --slow-* must be >= 1", file=sys.stderr)
        return 2
    if args.scale_samples < 1 or args.scale_buckets < 1 or args.scale_other_records < 0:
        print("--scale-samples and --scale-buckets must be >= 1, --scale-other-records >= 0", file=sys.stderr)
        return 2
    if args.only == "hashes":
        return run_hashes(args, argv)
    if args.only == "lock":
        return run_lock(args, argv)
    if args.only == "scale":
        return run_scale(args, argv)
    if args.only == "slow":
        return run_slow(args, argv)
    try:
        throughput, memory, scenarios = parse_only(args.only)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    statuses = [run_hashes(args, argv)] if args.only is None else []
    # throughput first: the memory suite's gigabytes of writes would still be flushing under wrk
    if throughput:
        if statuses:
            print()
        statuses.append(run_throughput(args, argv, scenarios))
    if memory is not None:
        if statuses:
            print()
        statuses.append(run_memory(args, argv, memory))
    if args.only is None:  # last: they seed millions of rows and load the machine for minutes
        print()
        statuses.append(run_scale(args, argv))
        print()
        statuses.append(run_slow(args, argv))
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
