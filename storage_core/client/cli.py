"""`storage-client` commands: argument parsing (argparse) and what each command prints.

Exit status: 0 success, 1 a failed operation (the problem's ``detail`` on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import mimetypes
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from storage_core.client import config, transfer
from storage_core.client.api import Api, ApiError, bucket_path, object_path
from storage_core.client.config import UsageError
from storage_core.client.progress import wanted as progress_wanted

PROG = "storage-client"
INT64_MAX = 2**63 - 1
UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]


def human(size: int) -> str:
    value, unit = float(size), 0
    while abs(value) >= 1024 and unit < len(UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {UNITS[unit]}"


def both(size: int) -> str:
    return f"{size} ({human(size)})"


def bucket_and_key(text: str, key_required: bool = True) -> tuple[str, str]:
    bucket, _, key = text.partition("/")
    if not bucket or (key_required and not key):
        raise UsageError(f"expected BUCKET/KEY, got {text!r}")
    return bucket, key


def timestamp_us(text: str, name: str) -> int:
    """Microseconds since the epoch, an ISO date or date-time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{name}: expected an ISO date or date-time (2026-11-01, 2026-11-01T12:00:00Z) or "
                         f"microseconds since the epoch, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1_000_000)


def iso_us(us: int) -> str:
    moment = dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{us % 1_000_000:06d}Z"


class Session:
    """What every command gets: the configured API, the output streams and whether to show progress."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO):
        self.args = args
        self.out = out
        self.err = err
        self.quiet = bool(getattr(args, "quiet", False))
        self.settings = config.load(args.url)
        jobs = int(getattr(args, "jobs", 0) or 4)
        self.api = Api(self.settings.url, self.settings.token, connections=max(4, jobs + 2))

    @property
    def progress(self) -> bool:
        return progress_wanted(self.quiet)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out)


# ---- commands -------------------------------------------------------------------------------------------


def cmd_put(s: Session, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file}: no such file")
    bucket, key = bucket_and_key(args.target, key_required=False)
    if not key or key.endswith("/"):
        key += path.name
    content_type = args.content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    stored = transfer.upload(s.api, path, bucket, key, part_size=s.settings.part_size, jobs=args.jobs,
                             show_progress=s.progress, content_type=content_type)
    s.say(f"{bucket}/{stored['key']}  {stored['size']}  {stored['checksum']}")
    return 0


def cmd_get(s: Session, args: argparse.Namespace) -> int:
    if args.checksum:
        if args.dest is not None:
            raise UsageError("get --checksum takes at most one DEST")
        checksum = args.checksum.lower()
        if len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum):
            raise UsageError(f"--checksum: expected a sha256 in hex, got {args.checksum!r}")
        params = {"bucket": args.bucket} if args.bucket else {}
        written = transfer.download(s.api, f"/api/v1/files/{checksum}/download", params, args.target, checksum,
                                    jobs=args.jobs, show_progress=s.progress, expected_checksum=checksum,
                                    use_disposition=True)
    else:
        if args.target is None:
            raise UsageError("get needs BUCKET/KEY (or --checksum SHA256)")
        if args.bucket:
            raise UsageError("--bucket goes with --checksum")
        bucket, key = bucket_and_key(args.target)
        name = transfer.filename_of(None, key.rsplit("/", 1)[-1] or "download")
        written = transfer.download(s.api, object_path(bucket, key), {}, args.dest, name, jobs=args.jobs,
                                    show_progress=s.progress)
    s.say(str(written))
    return 0


def cmd_ls(s: Session, args: argparse.Namespace) -> int:
    show = human if args.human else str
    if not args.target:
        for bucket in s.api.json("GET", "/api/v1/buckets")["buckets"]:
            print(f"{bucket['name']}  {bucket['owner']}  {bucket['visibility']}", file=s.out)
        return 0
    bucket, prefix = bucket_and_key(args.target, key_required=False)
    cursor = None
    while True:
        params = {"prefix": prefix, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = s.api.json("GET", f"{bucket_path(bucket)}/objects", params=params)
        for item in page["objects"]:
            print(f"{show(item['size']):>12}  {str(item['created_at'])[:19].replace('T', ' ')}  {item['key']}",
                  file=s.out)
        cursor = page.get("next_cursor")
        if not cursor:
            return 0


def cmd_rm(s: Session, args: argparse.Namespace) -> int:
    targets = [bucket_and_key(text) for text in args.targets]
    failed = 0
    for bucket, key in targets:
        try:
            s.api.request("DELETE", object_path(bucket, key), attempts=1)
            s.say(f"deleted {bucket}/{key}")
        except ApiError as exc:
            failed += 1
            print(f"{PROG}: {bucket}/{key}: {exc.detail}", file=s.err)
    return 1 if failed else 0


def cmd_quota(s: Session, args: argparse.Namespace) -> int:
    params = {"year_month": args.month} if args.month else {}
    q = s.api.json("GET", f"{bucket_path(args.bucket)}/read-quota", params=params)
    if args.json:
        print(json.dumps(q, indent=2, sort_keys=True), file=s.out)
        return 0
    charged_left = max(0, q["charged_quota_size"] - q["charged_consumed_size"])
    monthly_left = max(0, q["monthly_free_quota_size"] - q["monthly_free_consumed_size"])
    rows = [
        ("charged", both(q["charged_quota_size"]), both(q["charged_consumed_size"]), both(charged_left)),
        ("monthly free", both(q["monthly_free_quota_size"]), both(q["monthly_free_consumed_size"]),
         both(monthly_left)),
        ("one-time free", "-", both(q["free_consumed_size"]), both(q["sp_free_quota_size"])),
        ("total", "", both(q["consumed_size"]), both(q["remain_quota_size"])),
    ]
    print(f"read quota of {q['bucket']} in {q['year_month']} (UTC), bytes", file=s.out)
    widths = [max(len(row[i]) for row in [("kind", "quota", "consumed", "left"), *rows]) for i in range(4)]
    for row in [("kind", "quota", "consumed", "left"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=s.out)
    return 0


def cmd_records(s: Session, args: argparse.Namespace) -> int:
    since = timestamp_us(args.since, "--since") if args.since else 0
    until = timestamp_us(args.until, "--until") if args.until else INT64_MAX
    path = f"{bucket_path(args.bucket)}/read-records"
    base = {"start_timestamp_us": since, "end_timestamp_us": until, "max_records": 1000}
    cursor: str | None = None
    if args.csv:
        out = s.out.buffer if hasattr(s.out, "buffer") else None
        first = True
        while True:
            params = {**base, "format": "csv", **({"cursor": cursor} if cursor else {})}
            with s.api.stream("GET", path, params=params) as response:
                cursor = response.headers.get("X-Next-Cursor")
                pending = b"" if not first else None  # later pages: drop their header line
                for chunk in response.iter_bytes():
                    if pending is not None:
                        pending += chunk
                        end = pending.find(b"\r\n")
                        if end < 0:
                            continue
                        chunk, pending = pending[end + 2:], None
                    if out is not None:
                        out.write(chunk)
                    else:
                        s.out.write(chunk.decode("utf-8"))
            s.out.flush()
            first = False
            if not cursor:
                return 0
    while True:
        page = s.api.json("GET", path, params={**base, **({"cursor": cursor} if cursor else {})})
        for r in page["read_records"]:
            if args.json:
                print(json.dumps(r, sort_keys=True), file=s.out)
            else:
                print(f"{iso_us(r['timestamp_us'])}  {r['account']}  {r['read_size']}  {r['object_id']}  "
                      f"{r['object_name']}", file=s.out)
        cursor = page.get("next_cursor")
        if not cursor:
            return 0


def cmd_presign(s: Session, args: argparse.Namespace) -> int:
    bucket, key = bucket_and_key(args.target)
    answer = s.api.json("POST", object_path(bucket, key) + "/presign", json={"expires_in": args.expires}, attempts=1)
    print(answer["url"], file=s.out)
    return 0


def cmd_restore(s: Session, args: argparse.Namespace) -> int:
    checksums = [c.lower() for c in args.checksums]
    body: dict[str, Any] = {"checksums": checksums}
    if args.hours is not None:
        body["hours"] = args.hours
    try:
        answer = s.api.json("POST", "/api/v1/files/restore", json=body, attempts=1)
    except ApiError as exc:
        # a server without restore has no such route: 404, or 405 where POST /files/{checksum} exists
        if exc.status == 405 or (exc.status == 404 and exc.code in ("", "NotFound")):
            raise ApiError("restore is not supported by this server", exc.status) from None
        raise
    for item in answer:
        print(f"{item['checksum']}  {item['state']}  {item.get('expires_at') or '-'}", file=s.out)
    return 0


def cmd_configure(args: argparse.Namespace, out: TextIO) -> int:
    url, token = args.url, args.token
    if url is None and token is None and sys.stdin.isatty():
        current = config.load_file()
        url = input(f"Server URL [{current.get('url', 'http://127.0.0.1:8080')}]: ").strip() or current.get(
            "url", "http://127.0.0.1:8080")
        token = getpass.getpass("Token (empty: none): ").strip() or None
    if token == "-":
        token = sys.stdin.readline().strip() or None
    if not url:
        raise UsageError("configure needs --url (or run it on a terminal to be asked)")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"the server URL must start with http:// or https://, got {url!r}")
    path = config.save(url, token)
    print(f"wrote {path} (readable by you only)", file=out)
    return 0


# ---- parser ----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG, description="Upload, download and inspect objects of a storage service.",
        epilog="Configuration: STORAGE_URL and STORAGE_TOKEN, else the file written by `storage-client configure` "
               "(mode 0600). Uploads larger than STORAGE_CLIENT_PART_SIZE (default 64MiB) go in parallel parts and "
               "resume when run again. Exit status: 0 success, 1 failed operation, 2 bad usage.")
    top.add_argument("--url", help="server URL (overrides STORAGE_URL and the config file)")
    top.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no messages")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars and no messages")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def jobs(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("-j", "--jobs", type=int, default=4, metavar="N", help=f"{what} at once (default 4)")

    put = commands.add_parser("put", parents=[quiet], help="upload a file",
                              description="Upload FILE to BUCKET/KEY (KEY ending in / or empty: the file's name is "
                                          "appended). Large files go in parallel parts; run the same command again "
                                          "to resume an interrupted upload.")
    put.add_argument("file", metavar="FILE")
    put.add_argument("target", metavar="BUCKET/KEY")
    put.add_argument("--content-type", help="media type (default: guessed from the name)")
    jobs(put, "parts")
    put.set_defaults(run=cmd_put)

    get = commands.add_parser("get", parents=[quiet], help="download an object or a file",
                              description="Download BUCKET/KEY, or a file by its sha256 with --checksum, to DEST (a "
                                          "file or a directory; default: the current directory). The download is "
                                          "written beside DEST, resumed when run again, checked against its sha256 "
                                          "and renamed into place only then.")
    get.add_argument("target", nargs="?", metavar="BUCKET/KEY")
    get.add_argument("dest", nargs="?", metavar="DEST")
    get.add_argument("--checksum", metavar="SHA256", help="download the file with this sha256 instead")
    get.add_argument("--bucket", help="with --checksum: the bucket that pays, when several hold the file")
    jobs(get, "ranges")
    get.set_defaults(run=cmd_get)

    ls = commands.add_parser("ls", parents=[quiet], help="list buckets, or the objects of a bucket",
                             description="Without an argument: your buckets. With BUCKET[/PREFIX]: size, date and key "
                                         "of every object under PREFIX.")
    ls.add_argument("target", nargs="?", metavar="BUCKET[/PREFIX]")
    ls.add_argument("--human", action="store_true", help="sizes in KiB, MiB, ...")
    ls.set_defaults(run=cmd_ls)

    rm = commands.add_parser("rm", parents=[quiet], help="delete objects")
    rm.add_argument("targets", nargs="+", metavar="BUCKET/KEY")
    rm.set_defaults(run=cmd_rm)

    quota = commands.add_parser("quota", parents=[quiet], help="a bucket's read quota of a month",
                                description="What each kind of read quota (charged, monthly free, one-time free) "
                                            "has consumed and has left, in bytes.")
    quota.add_argument("bucket", metavar="BUCKET")
    quota.add_argument("--month", metavar="YYYY-MM", help="default: this month (UTC)")
    quota.add_argument("--json", action="store_true", help="the API's JSON as it is")
    quota.set_defaults(run=cmd_quota)

    records = commands.add_parser("records", parents=[quiet], help="a bucket's read records (every page)",
                                  description="Read records in [--since, --until), oldest first, every page. "
                                              "Times: ISO dates or date-times (UTC unless an offset is given) or "
                                              "microseconds since the epoch.")
    records.add_argument("bucket", metavar="BUCKET")
    records.add_argument("--since", metavar="TIME")
    records.add_argument("--until", metavar="TIME")
    shape = records.add_mutually_exclusive_group()
    shape.add_argument("--csv", action="store_true", help="CSV (the service's, streamed page after page)")
    shape.add_argument("--json", action="store_true", help="one JSON object a line")
    records.set_defaults(run=cmd_records)

    presign = commands.add_parser("presign", parents=[quiet], help="a download link anyone can use until it expires")
    presign.add_argument("target", metavar="BUCKET/KEY")
    presign.add_argument("--expires", type=int, default=3600, metavar="S", help="seconds (default 3600)")
    presign.set_defaults(run=cmd_presign)

    restore = commands.add_parser("restore", parents=[quiet], help="bring nearline files online")
    restore.add_argument("checksums", nargs="+", metavar="CHECKSUM")
    restore.add_argument("--hours", type=int, help="how long the restored copy stays (server default otherwise)")
    restore.set_defaults(run=cmd_restore)

    configure = commands.add_parser("configure", help="write the config file (mode 0600)",
                                    description="Save the server URL and token (asked for on a terminal; "
                                                "--token - reads it from standard input).")
    configure.add_argument("--url", dest="url", default=argparse.SUPPRESS, help="server URL")
    configure.add_argument("--token", help="bearer token ('-': read from standard input)")
    configure.set_defaults(run=None)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "configure":
            return cmd_configure(args, out)
        session = Session(args, out, err)
        try:
            return args.run(session, args)
        finally:
            session.api.close()
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except ApiError as exc:
        print(f"{PROG}: {exc.detail}", file=err)
        return 1
    except (KeyboardInterrupt, transfer.Interrupted):
        print(f"{PROG}: interrupted; run the same command again to resume", file=err)
        return 1
    except BrokenPipeError:  # `storage-client records B | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
