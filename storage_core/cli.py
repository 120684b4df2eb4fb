"""`storage-admin`: database migrations, location and bucket management, first-run setup, garbage collection,
restores of nearline files and the restore cache."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import profiles
from storage_core.auth import DEVELOPMENT_ADMIN
from storage_core.container import Container, build_container
from storage_core.db import database_url
from storage_core.errors import ConfigurationError, DatabaseUnavailable, InvalidArgument, StorageError
from storage_core.migrations import upgrade
from storage_core.settings import Settings

log = logging.getLogger("storage_core.cli")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_db_upgrade(container: Container, args: argparse.Namespace) -> int:
    upgrade(container.engine(), args.revision)
    print(f"database at revision {args.revision}")
    return 0


def cmd_location_add(container: Container, args: argparse.Namespace) -> int:
    config = json.loads(args.config)
    _print(container.location_service().create({
        "name": args.name, "plugin": args.plugin, "tier": args.tier, "priority": args.priority,
        "enabled": True, "config": config, "capacity": args.capacity, "access": args.access,
        "purpose": args.purpose,
    }, check=args.check))
    return 0


def cmd_location_list(container: Container, _args: argparse.Namespace) -> int:
    _print(container.location_service().list())
    return 0


def cmd_bucket_add(container: Container, args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"name": args.name, "visibility": args.visibility,
                            "charged_read_quota": args.charged_read_quota, "locations": args.location or []}
    data["owner"] = args.owner
    _print(container.bucket_service().create(data, DEVELOPMENT_ADMIN))
    return 0


def cmd_bucket_list(container: Container, _args: argparse.Namespace) -> int:
    _print(container.bucket_service().list(DEVELOPMENT_ADMIN))
    return 0


def cmd_bootstrap(container: Container, args: argparse.Namespace) -> int:
    """First run of the embedded default: a local location under the data dir and a bucket."""
    settings: Settings = container.settings()
    locations = container.location_service()
    if not locations.list():
        root = settings.data_path / "locations" / args.location
        locations.create({"name": args.location, "plugin": "local", "tier": "hot", "priority": 0,
                          "enabled": True, "config": {"root": str(root)}})
        print(f"created storage location {args.location!r} at {root}")
    buckets = container.bucket_service()
    if not buckets.list(DEVELOPMENT_ADMIN):
        buckets.create({"name": args.bucket, "visibility": "public-read", "charged_read_quota": 0,
                        "locations": [], "owner": "admin"}, DEVELOPMENT_ADMIN)
        print(f"created bucket {args.bucket!r}")
    return 0


def cmd_token_issue(container: Container, args: argparse.Namespace) -> int:
    print(container.authenticator().issue_token(args.sub, args.role or [], args.ttl))
    return 0


def cmd_access_key_create(container: Container, args: argparse.Namespace) -> int:
    _print(container.access_key_service().create(DEVELOPMENT_ADMIN, args.account, args.role or [], args.description))
    return 0


def cmd_access_key_list(container: Container, args: argparse.Namespace) -> int:
    _print(container.access_key_service().list(DEVELOPMENT_ADMIN, args.account))
    return 0


def cmd_access_key_delete(container: Container, args: argparse.Namespace) -> int:
    container.access_key_service().delete(DEVELOPMENT_ADMIN, args.access_key_id)
    print(f"deleted access key {args.access_key_id}")
    return 0


def cmd_account_limit(container: Container, args: argparse.Namespace) -> int:
    _print(container.download_limits().set_limits(args.account, args.concurrent, args.monthly))
    return 0


def cmd_presign_revoke(container: Container, args: argparse.Namespace) -> int:
    _print(container.permission_service().revoke_presigned(DEVELOPMENT_ADMIN, args.account))
    return 0


def cmd_verify(container: Container, args: argparse.Namespace) -> int:
    report = container.scrubber().verify(args.location, repair=args.repair)
    _print(report)
    return 1 if report["unrepairable"] or (report["copies_bad"] and not args.repair) else 0


def cmd_gc(container: Container, args: argparse.Namespace) -> int:
    report = container.garbage_collector().collect(pending_grace_seconds=args.grace, dry_run=args.dry_run)
    _print(report)
    return 0


def cmd_restore_list(container: Container, args: argparse.Namespace) -> int:
    _print(container.restore_service().jobs(args.state, args.limit))
    return 0


def cmd_restore_request(container: Container, args: argparse.Namespace) -> int:
    from storage_core.names import validate_checksum

    for checksum in args.checksum:
        validate_checksum(checksum)
    states = container.restore_service().request(args.checksum, args.hours, DEVELOPMENT_ADMIN)
    _print([state.view() for state in states])
    return 0


def cmd_restore_work(container: Container, args: argparse.Namespace) -> int:
    """Restore and webhook loops in the foreground, for hosts dedicated to restores."""
    from storage_core.workers import BackgroundWorkers

    workers = BackgroundWorkers(container, args.workers)
    if args.once:
        done = workers.run_until_idle(workers.owner(0))
        print(f"{done} restore step(s) and delivery(ies) done")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: workers.stop_event.set())
    workers.start()
    print(f"{args.workers} restore worker loop(s) running; Ctrl-C or SIGTERM stops them", file=sys.stderr)
    try:
        while not workers.stop_event.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    workers.stop()
    return 0


def cmd_cache_status(container: Container, _args: argparse.Namespace) -> int:
    _print(container.restore_cache().status())
    return 0


def cmd_cache_purge(container: Container, args: argparse.Namespace) -> int:
    _print(container.restore_cache().purge(everything=args.all, location=args.location))
    return 0


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return value


def database_name(settings: Settings) -> str:
    """The database as an operator knows it: the SQLite file's path, or the URL without its password."""
    url = database_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        return str(Path(url.database or "").absolute()) if url.database else "(in memory)"
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def database_problem(settings: Settings, exc: BaseException) -> str:
    """One line for a database that cannot be used: which one, why, and what to set."""
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ is not None else exc
    reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
    if "no such table" in reason or ('relation "' in reason and "does not exist" in reason):
        hint = "run `storage-admin db upgrade` first"
    elif settings.database_url:
        hint = "check STORAGE_DATABASE_URL"
    else:
        hint = (f"the embedded default is in STORAGE_DATA_DIR, now {settings.data_path}: set it, "
                "or STORAGE_DATABASE_URL")
    return f"cannot open the database {database_name(settings)}: {reason} ({hint})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storage-admin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    location = sub.add_parser("location", help="storage locations").add_subparsers(dest="sub", required=True)
    add = location.add_parser("add", help="create a location")
    add.add_argument("name")
    add.add_argument("--plugin", default="local")
    add.add_argument("--tier", choices=["hot", "cold"], default="hot")
    add.add_argument("--priority", type=int, default=0)
    add.add_argument("--capacity", type=int)
    add.add_argument("--access", choices=["online", "nearline"], default="online",
                     help="nearline: tape or Glacier (local with restore_seconds, s3 with storage_class GLACIER)")
    add.add_argument("--purpose", choices=["storage", "cache"], default="storage",
                     help="cache: the restore cache of nearline files (give it a --capacity)")
    add.add_argument("--config", required=True, help='plugin config as JSON, e.g. \'{"root": "/data"}\'')
    add.add_argument("--no-check", dest="check", action="store_false",
                     help="add it as it is: do not create a local root nor reach an S3 endpoint first")
    add.set_defaults(func=cmd_location_add)
    location.add_parser("list", help="list locations").set_defaults(func=cmd_location_list)

    bucket = sub.add_parser("bucket", help="buckets").add_subparsers(dest="sub", required=True)
    badd = bucket.add_parser("add", help="create a bucket")
    badd.add_argument("name")
    badd.add_argument("--owner", default="admin")
    badd.add_argument("--visibility", choices=["private", "public-read"], default="private")
    badd.add_argument("--charged-read-quota", type=int, default=0)
    badd.add_argument("--location", action="append", help="target location (repeatable)")
    badd.set_defaults(func=cmd_bucket_add)
    bucket.add_parser("list", help="list buckets").set_defaults(func=cmd_bucket_list)

    boot = sub.add_parser("bootstrap", help="first-run setup: a local location and a bucket if none exist")
    boot.add_argument("--location", default="local")
    boot.add_argument("--bucket", default="default")
    boot.set_defaults(func=cmd_bootstrap)

    token = sub.add_parser("token", help="bearer tokens").add_subparsers(dest="sub", required=True)
    issue = token.add_parser("issue", help="print a signed token (HS256 secret or the private key)")
    issue.add_argument("--sub", required=True, help="the account")
    issue.add_argument("--role", action="append", help="a role, e.g. admin (repeatable)")
    issue.add_argument("--ttl", type=positive_int, default=3600, help="seconds until it expires (> 0)")
    issue.set_defaults(func=cmd_token_issue)

    keys = sub.add_parser("access-key", help="S3 access keys").add_subparsers(dest="sub", required=True)
    kcreate = keys.add_parser("create", help="create a key; prints its secret, shown this once")
    kcreate.add_argument("--account", required=True)
    kcreate.add_argument("--role", action="append", help="a role, e.g. admin (repeatable)")
    kcreate.add_argument("--description")
    kcreate.set_defaults(func=cmd_access_key_create)
    klist = keys.add_parser("list", help="list keys (without secrets)")
    klist.add_argument("--account", help="only this account's keys")
    klist.set_defaults(func=cmd_access_key_list)
    kdelete = keys.add_parser("delete", help="delete a key (refused at once by every instance)")
    kdelete.add_argument("access_key_id")
    kdelete.set_defaults(func=cmd_access_key_delete)

    account = sub.add_parser("account", help="account download limits").add_subparsers(dest="sub", required=True)
    limit = account.add_parser("limit", help="set limits (omit both to remove them)")
    limit.add_argument("account")
    limit.add_argument("--concurrent", type=int, help="simultaneous downloads")
    limit.add_argument("--monthly", type=int, help="downloads per UTC month")
    limit.set_defaults(func=cmd_account_limit)

    presign = sub.add_parser("presign", help="presigned URLs").add_subparsers(dest="sub", required=True)
    revoke = presign.add_parser("revoke", help="every URL the account signed until now stops working")
    revoke.add_argument("--account", required=True)
    revoke.set_defaults(func=cmd_presign_revoke)

    verify = sub.add_parser("verify", help="read every copy, mark corrupt ones, optionally repair them")
    verify.add_argument("--location", help="only the copies on this location")
    verify.add_argument("--repair", action="store_true", help="rewrite bad pieces from a good copy")
    verify.set_defaults(func=cmd_verify)

    restore = sub.add_parser("restore", help="restores of nearline files").add_subparsers(dest="sub", required=True)
    rlist = restore.add_parser("list", help="restore jobs, newest first")
    rlist.add_argument("--state", choices=["queued", "running", "done", "failed"])
    rlist.add_argument("--limit", type=int, default=100)
    rlist.set_defaults(func=cmd_restore_list)
    rrequest = restore.add_parser("request", help="restore files (as admin), like POST /api/v1/files/restore")
    rrequest.add_argument("checksum", nargs="+")
    rrequest.add_argument("--hours", type=int, help="hours in the cache (default STORAGE_RESTORE_HOURS)")
    rrequest.set_defaults(func=cmd_restore_request)
    work = restore.add_parser("work", help="run restore and webhook workers in the foreground")
    work.add_argument("--workers", type=int, default=2, help="loops in this process")
    work.add_argument("--once", action="store_true", help="do what is due, then exit")
    work.set_defaults(func=cmd_restore_work)

    cache = sub.add_parser("cache", help="the restore cache").add_subparsers(dest="sub", required=True)
    cache.add_parser("status", help="use of each cache location, restores waiting for room").set_defaults(
        func=cmd_cache_status)
    purge = cache.add_parser("purge", help="remove expired cached copies (never one being read)")
    purge.add_argument("--all", action="store_true", help="every cached copy, expired or not")
    purge.add_argument("--location", help="only this cache location")
    purge.set_defaults(func=cmd_cache_purge)

    gc = sub.add_parser("gc", help="remove pieces and rows no object needs (failed uploads, deletions)")
    gc.add_argument("--grace", type=int, default=3600,
                    help="seconds after which a pending (in-progress) copy counts as abandoned")
    gc.add_argument("--dry-run", action="store_true")
    gc.set_defaults(func=cmd_gc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        container = build_container(settings, frozenset({profiles.STORAGE}))
        return args.func(container, args)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (DatabaseUnavailable, DBAPIError, PoolTimeout) as exc:
        print(database_problem(settings, exc), file=sys.stderr)
        return 1
    except OSError as exc:
        # the data directory itself cannot be made (make_engine creates it for the SQLite file)
        if exc.filename is not None and Path(exc.filename) in (settings.data_path, *settings.data_path.parents):
            print(database_problem(settings, exc), file=sys.stderr)
            return 1
        raise
    except StorageError as exc:
        print(f"{exc.code}: {exc.detail}", file=sys.stderr)
        # bad input is bad usage, as for argparse's own refusals; anything else is a failed operation
        return 2 if isinstance(exc, InvalidArgument) else 1
    except json.JSONDecodeError as exc:
        print(f"invalid JSON: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
