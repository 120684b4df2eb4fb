"""`python -m bench.run` (what `make bench` calls): run the benchmarks, print tables, record them in docs/benchmarks.md.

Two suites, both by default: ``throughput`` (wrk against the downloader service, nginx and a bare
Flask app; installs nginx and wrk with apt-get when missing) and ``memory`` (worker growth during a
big upload and big downloads). ``--only`` picks one suite (``throughput``, ``memory``) or one memory
measurement (``upload``, ``download``, ``s3-upload``); ``--only throughput:big,range`` picks throughput
scenarios (``s3-small``, ``s3-big`` and ``s3-signed`` are the S3 API's; ``make bench-s3`` runs them and
``s3-upload``).

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

from bench import hashes
from bench.harness import REPO, BenchError, MiB, Workspace, machine
from bench.memory import MemoryBenchmark
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


RATIO_METRICS = {"mib_per_s": "MiB/s", "req_per_s": "req/s"}


def ratio_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["measurement", "ratio", "downloader", "reference", "target", "result"]
    rows = []
    for r in run["ratios"]:
        unit = RATIO_METRICS[r["metric"]]
        rows.append([f"{r['title']}: {unit} downloader / {r['reference']}", f"{r['ratio']:.3f}",
                     f"{r['downloader']:,.1f} {unit}", f"{r['reference_value']:,.1f} {unit}",
                     "-" if r["target"] is None else f">= {r['target']}",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="SUITE",
                        help="run only this: throughput (or throughput:big,small,range), memory, hashes, or one "
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
                             "functions by self time; memory: the same for one more big upload")
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
    raise ValueError(f"--only {only}: expected throughput[:scenario,...], memory, hashes, upload, download or "
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
    if args.size_mib < 1 or args.parallel < 1 or args.duration < 1 or args.throughput_mib < 1:
        print("--size-mib, --parallel, --duration and --throughput-mib must be >= 1", file=sys.stderr)
        return 2
    if args.only == "hashes":
        return run_hashes(args, argv)
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
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
