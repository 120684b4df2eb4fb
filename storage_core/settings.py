"""Every setting of the service: its environment variable, default and meaning, read in one place.

``docs/configuration.md`` is the table of these settings; keep the two in step.
A bad value stops the start with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from storage_core.errors import ConfigurationError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def _int(minimum: int = 0) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _float(minimum: float = 0.0) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise ValueError(f"must be a finite number >= {minimum}, got {raw!r}")
        return value

    return parse


def _hours(raw: str) -> int:
    value = _int(1)(raw)
    if value > 720:
        raise ValueError(f"must be between 1 and 720 hours, got {value}")
    return value


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {raw!r}")


def _bind(raw: str) -> str:
    if not raw.strip():
        return ""
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {raw!r}")
    return raw.strip()


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return value


def _text(raw: str) -> str:
    return raw


def _setting(env: str, parse: Callable[[str], Any], default: Any, doc: str) -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Settings of one process. Build with ``Settings.from_env()``; tests use ``replace()``."""

    database_url: str = _setting(
        "STORAGE_DATABASE_URL", _text, "",
        "SQLAlchemy URL. PostgreSQL in production; default: SQLite file `storage.db` in the data dir.")
    bind: str = _setting("STORAGE_BIND", _bind, "127.0.0.1:8080", "Address gunicorn listens on, host:port.")
    workers: int = _setting("STORAGE_WORKERS", _int(1), 2, "Number of gunicorn gevent worker processes.")
    worker_connections: int = _setting(
        "STORAGE_WORKER_CONNECTIONS", _int(1), 1000,
        "Simultaneous connections per gevent worker, each download one for as long as its client reads (see "
        "\"Many slow clients\" below; the service raises its open files limit to two per connection).")
    timeout: int = _setting(
        "STORAGE_TIMEOUT", _int(1), 120, "Seconds a worker may stay silent before gunicorn restarts it.")
    graceful_timeout: int = _setting(
        "STORAGE_GRACEFUL_TIMEOUT", _int(1), 30, "Seconds running requests get to finish on shutdown.")
    jwt_secret: str = _setting("STORAGE_JWT_SECRET", _text, "", "HS256 secret verifying bearer tokens.")
    jwt_public_key: str = _setting(
        "STORAGE_JWT_PUBLIC_KEY", _text, "", "PEM public key (EdDSA or RS256) verifying bearer tokens.")
    jwt_private_key: str = _setting(
        "STORAGE_JWT_PRIVATE_KEY", _text, "",
        "PEM private key (Ed25519 or RSA) signing tokens issued by `storage-admin token issue`; its public "
        "half verifies them. Give downloaders only STORAGE_JWT_PUBLIC_KEY.")
    url_signing_secret: str = _setting(
        "STORAGE_URL_SIGNING_SECRET", _text, "",
        "HMAC secret of presigned download URLs, shared by every instance (default: derived from "
        "STORAGE_JWT_SECRET). It can only sign download URLs, never tokens.")
    verify_reads: bool = _setting(
        "STORAGE_VERIFY_READS", _bool, True,
        "Check every block against its recorded digest (BLAKE3) before sending it (a corrupt copy is never served; "
        "see docs/benchmarks.md for the cost). Turn off only if the locations verify data themselves.")
    public_max_age: int = _setting(
        "STORAGE_PUBLIC_MAX_AGE", _int(0), 0,
        "max-age of `Cache-Control: public` on downloads of public-read buckets (0: caches revalidate with "
        "the ETag each time). Private buckets and presigned URLs are always `private`.")
    send_timeout: int = _setting(
        "STORAGE_SEND_TIMEOUT", _int(1), 30,
        "Seconds a download may make no progress (the client reads nothing) before it is cut and its "
        "undelivered bytes refunded.")
    lease_seconds: int = _setting(
        "STORAGE_DOWNLOAD_LEASE_SECONDS", _int(5), 60,
        "How long a download counts against a concurrency limit without being renewed (bounds what a "
        "crashed instance holds).")
    auth_disabled: bool = _setting(
        "STORAGE_AUTH_DISABLED", _bool, False, "Development only: no authentication, every request is admin.")
    piece_size: int = _setting(
        "STORAGE_PIECE_SIZE", _int(1), 16 * MiB,
        "Bytes per piece for new uploads (recorded per file, so changing it never breaks old files).")
    block_size: int = _setting(
        "STORAGE_BLOCK_SIZE", _int(4096), 64 * KiB,
        "Bytes per integrity block of new uploads (recorded per file, so older 1 MiB-block files keep working): "
        "a BLAKE3 digest is recorded per block of each piece and checked on read, so a range reads and hashes "
        "whole blocks.")
    free_read_quota: int = _setting(
        "STORAGE_FREE_READ_QUOTA", _int(0), 1 * GiB, "Default one-time free read quota of a new bucket, bytes.")
    monthly_free_read_quota: int = _setting(
        "STORAGE_MONTHLY_FREE_READ_QUOTA", _int(0), 1 * GiB,
        "Default monthly free read quota of a new bucket, bytes.")
    data_dir: str = _setting(
        "STORAGE_DATA_DIR", _text, "var",
        "Directory for the SQLite database, upload spool files and the default local location.")
    log_level: str = _setting("STORAGE_LOG_LEVEL", _log_level, "INFO", "Log level.")
    db_pool_size: int = _setting(
        "STORAGE_DB_POOL_SIZE", _int(1), 10, "Database connections kept per worker process.")
    db_timeout: int = _setting(
        "STORAGE_DB_TIMEOUT", _int(1), 10,
        "Seconds any database wait may take (connecting, a statement, a lock, a free pooled connection) "
        "before the request fails closed with 503 DatabaseUnavailable.")
    db_prepare: bool = _setting(
        "STORAGE_DB_PREPARE", _bool, True,
        "The hot SELECTs of the download path (resolve, access keys) are server-side prepared statements on "
        "PostgreSQL (planned once per connection). Off: sent as plain statements, planned each time (about "
        "0.3 ms of PostgreSQL CPU per download more), as a pooler in transaction mode (PgBouncer) needs: "
        "see docs/deployment.md.")
    upload_wait_seconds: int = _setting(
        "STORAGE_UPLOAD_WAIT_SECONDS", _int(0), 120,
        "How long an upload waits for another upload of the same content to finish writing it before "
        "answering 409.")
    s3_bind: str = _setting(
        "STORAGE_S3_BIND", _bind, "",
        "Second address (host:port) on which the same processes serve the S3 API (empty: no S3 listener).")
    s3_domain: str = _setting(
        "STORAGE_S3_DOMAIN", _text, "",
        "Domain of virtual-host-style S3 addressing: `<bucket>.<domain>` names a bucket (empty: path style only).")
    s3_region: str = _setting("STORAGE_S3_REGION", _text, "us-east-1", "The region S3 clients sign for.")
    s3_sealing_key: str = _setting(
        "STORAGE_S3_SEALING_KEY", _text, "",
        "High-entropy secret whose HKDF derivative seals S3 access-key secrets at rest (default: derived from "
        "STORAGE_JWT_SECRET). Downloaders that verify S3 signatures without the JWT secret need it.")
    s3_sealing_previous: str = _setting(
        "STORAGE_S3_SEALING_PREVIOUS", _text, "",
        "Comma-separated former sealing secrets: secrets sealed under them still open (key rotation).")
    upload_expiry_hours: int = _setting(
        "STORAGE_UPLOAD_EXPIRY_HOURS", _int(1), 24,
        "Hours a multipart upload may stay idle before `storage-admin gc` removes it and its parts.")
    ready_timeout: int = _setting(
        "STORAGE_READY_TIMEOUT", _int(1), 2,
        "Seconds /health/ready waits for the locations' checks (run in parallel); a location that has not "
        "answered by then counts as unavailable, so a hung endpoint cannot make the instance look down.")
    max_json_bytes: int = _setting(
        "STORAGE_MAX_JSON_BYTES", _int(1), 1 * MiB,
        "Largest JSON request body, bytes: 413 from its Content-Length before it is read, or once a chunked "
        "body passes it.")
    max_upload_size: int = _setting(
        "STORAGE_MAX_UPLOAD_SIZE", _int(0), 5 * 1024 * GiB, "Largest accepted object, bytes (0: no limit).")
    restore_on_read: bool = _setting(
        "STORAGE_RESTORE_ON_READ", _bool, True,
        "A download of a file whose only copies are nearline (and not cached) starts a restore and answers 503 "
        "RestoreInProgress with Retry-After; off: 409 NotAvailable (restores only through POST /files/restore).")
    restore_hours: int = _setting(
        "STORAGE_RESTORE_HOURS", _hours, 24,
        "Hours a restored copy stays in the cache when a request names none (1 to 720).")
    restore_workers: int = _setting(
        "STORAGE_RESTORE_WORKERS", _int(0), 1,
        "Restore and webhook workers (background loops) per storage-service worker process; 0: none (run "
        "`storage-admin restore work` on dedicated hosts instead).")
    restore_poll_seconds: float = _setting(
        "STORAGE_RESTORE_POLL_SECONDS", _float(0.01), 1.0,
        "How often an idle restore worker looks for due restore jobs and webhook events (one query each).")
    restore_lease_seconds: int = _setting(
        "STORAGE_RESTORE_LEASE_SECONDS", _int(2), 30,
        "How long a restore job or event taken by a worker stays its own without a heartbeat: a job of a "
        "worker that died is taken again after this.")
    restore_retry_seconds: float = _setting(
        "STORAGE_RESTORE_RETRY_SECONDS", _float(0.01), 10.0,
        "First wait after a failed restore step or webhook delivery; each further failure doubles it (up to "
        "an hour).")
    restore_max_attempts: int = _setting(
        "STORAGE_RESTORE_MAX_ATTEMPTS", _int(1), 5,
        "Failed attempts (location errors) after which a restore job fails and `file.restore_failed` is sent.")
    event_webhook_url: str = _setting(
        "STORAGE_EVENT_WEBHOOK_URL", _url, "",
        "URL each completed or failed restore is POSTed to as JSON (`file.available`, "
        "`file.restore_failed`), retried until it answers 2xx; empty: no events.")
    event_webhook_secret: str = _setting(
        "STORAGE_EVENT_WEBHOOK_SECRET", _text, "",
        "Key of the HMAC-SHA256 of each event body, sent hex-encoded in X-Storage-Signature.")
    console_part_size: int = _setting(
        "STORAGE_CONSOLE_PART_SIZE", _int(5 * MiB), 64 * MiB,
        "The web console uploads a file larger than this in parts of this size (native multipart, three at once; "
        "at least 5 MiB, the smallest part the multipart API takes).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(field.metadata["env"])
            if raw is None or raw == "":
                continue
            try:
                values[field.name] = field.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigurationError(f"{field.metadata['env']}: {exc}") from None
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).absolute()

    @property
    def spool_dir(self) -> Path:
        return self.data_path / "spool"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'storage.db'}"


def documentation_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the source of docs/configuration.md."""
    return [
        (f.metadata["env"], repr(f.default) if f.default != "" else "(empty)", f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]


def documentation_table() -> str:
    """The table of docs/configuration.md (print it with ``python -m storage_core.settings``)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{env}` | {default.replace('|', '/')} | {doc} |" for env, default, doc in documentation_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(documentation_table(), end="")
