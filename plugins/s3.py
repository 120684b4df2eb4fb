"""The ``s3`` location plugin: pieces as objects in one MinIO/S3 bucket, through the minio SDK.

With ``config.storage_class`` an archive class (``GLACIER``, ``DEEP_ARCHIVE``) the location is nearline:
pieces are written in that class, restored with RestoreObject, and ``x-amz-restore`` says how a restore
stands.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import certifi
import urllib3
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import Object
from minio.error import InvalidResponseError, MinioException, S3Error
from minio.helpers import MAX_MULTIPART_COUNT, MIN_PART_SIZE, check_bucket_name

from plugins import ExactReader, check_byte_range, check_piece_address, parse_piece_name
from storage_core.errors import NotRestored, PieceMissing, StorageError, StorageUnavailable
from storage_core.plugin import READ_CHUNK, LocationPlugin, RestoreCapability, RestoreStatus

# Bytes buffered per upload: minio reads a whole part into memory before sending it. 16 MiB keeps
# that small while a 5 GiB piece still needs only 320 parts (S3 allows 10,000, minimum 5 MiB).
PART_SIZE = 16 * 1024 * 1024

# A dead endpoint must fail fast so that reads fail over to another copy: minio's own defaults
# are a 5-minute timeout and 5 retries.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
RETRIES = 2
# Connections kept per host; requests beyond it open short-lived extra connections, never block.
POOL_SIZE = 16

# host or [IPv6], optional port, nothing else: the scheme comes from ``secure``
_ENDPOINT = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?"
)
# S3 error codes meaning "this piece is not (wholly) here": another copy may have it
_PIECE_MISSING_CODES = frozenset({"NoSuchKey", "InvalidRange"})

STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                   "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
# the classes whose objects must be restored before they are read (GLACIER_IR is read directly)
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# typical restore times by class and retrieval tier (AWS: Expedited 1-5 min, Standard 3-5 h, Bulk 5-12 h;
# Deep Archive: Standard within 12 h, Bulk within 48 h, no Expedited)
RESTORE_ESTIMATES = {
    ("GLACIER", "Expedited"): 5 * 60, ("GLACIER", "Standard"): 5 * 3600, ("GLACIER", "Bulk"): 12 * 3600,
    ("DEEP_ARCHIVE", "Standard"): 12 * 3600, ("DEEP_ARCHIVE", "Bulk"): 48 * 3600,
}
_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"')
_EXPIRY = re.compile(r'expiry-date\s*=\s*"([^"]+)"')


class S3ConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    endpoint = fields.String(required=True)
    access_key = fields.String(required=True, validate=validate.Length(min=1))
    secret_key = fields.String(required=True, validate=validate.Length(min=1))
    bucket = fields.String(required=True)
    secure = fields.Boolean(load_default=True)
    region = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^[a-z0-9-]{1,64}$"))
    prefix = fields.String(load_default="", validate=validate.Length(max=512))
    create_bucket = fields.Boolean(load_default=False)
    # the class pieces are written in; GLACIER or DEEP_ARCHIVE make the location nearline
    # (absent unless set, so that the configs of online locations stay as they were)
    storage_class = fields.String(allow_none=True, validate=validate.OneOf(STORAGE_CLASSES))
    # the RestoreObject tier (default Standard), and how often a restore under way is asked about (a HEAD per
    # piece each time; default 300 s)
    restore_tier = fields.String(validate=validate.OneOf(["Expedited", "Standard", "Bulk"]))
    restore_check_seconds = fields.Float(validate=validate.Range(min=0.05, max=86400))

    @validates("endpoint")
    def _endpoint(self, value: str, **_: Any) -> None:
        match = _ENDPOINT.fullmatch(value)
        if match is None:
            raise ValidationError("must be host or host:port, without scheme or path")
        if match["port"] is not None and not 0 < int(match["port"]) < 65536:
            raise ValidationError("port must be between 1 and 65535")

    @validates("bucket")
    def _bucket(self, value: str, **_: Any) -> None:
        # the same rules minio applies in make_bucket, so a config that loads can be created
        try:
            check_bucket_name(value, strict=True)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    @validates("prefix")
    def _prefix(self, value: str, **_: Any) -> None:
        if value.startswith("/") or "//" in value or "\0" in value:
            raise ValidationError("must not start with '/' nor contain '//' or NUL")

    @post_load
    def _normalise_prefix(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data["prefix"] and not data["prefix"].endswith("/"):
            data["prefix"] += "/"
        if (data.get("storage_class"), data.get("restore_tier")) == ("DEEP_ARCHIVE", "Expedited"):
            raise ValidationError("DEEP_ARCHIVE objects cannot be restored with the Expedited tier",
                                  "restore_tier")
        return data


class S3Location(LocationPlugin):
    """Pieces at ``<prefix>pieces/<checksum[0:2]>/<checksum>.<index>`` in one bucket."""

    name = "s3"
    config_schema = S3ConfigSchema
    secret_fields = frozenset({"secret_key"})

    #: upload part size; a class attribute so tests can exercise multipart uploads with small pieces
    part_size = PART_SIZE

    def __init__(self, config: Mapping[str, Any]):
        # validated here too so defaults and the prefix normalisation apply however it is built
        super().__init__(self.validate_config(config))
        self.bucket: str = self.config["bucket"]
        self._pieces_prefix = f"{self.config['prefix']}pieces/"
        self._lock = threading.Lock()
        self._minio: Minio | None = None
        self._http: urllib3.PoolManager | None = None
        self._bucket_ready = False
        self.storage_class: str | None = self.config.get("storage_class")
        self._restore = S3Restore(self) if self.storage_class in ARCHIVE_CLASSES else None

    @property
    def restore_capability(self) -> RestoreCapability | None:
        return self._restore

    def _client(self) -> Minio:
        # one client per location, made on first use: the Minio client is thread-safe and its
        # pool is what makes connection reuse work
        client = self._minio
        if client is None:
            with self._lock:
                if self._minio is None:
                    self._http = urllib3.PoolManager(
                        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
                        maxsize=POOL_SIZE,
                        cert_reqs="CERT_REQUIRED",
                        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                        retries=urllib3.Retry(
                            total=RETRIES,
                            backoff_factor=0.2,
                            status_forcelist=(500, 502, 503, 504),
                            # hand the last 5xx to minio, whose S3Error says what went wrong
                            raise_on_status=False,
                        ),
                    )
                    self._minio = Minio(
                        self.config["endpoint"],
                        access_key=self.config["access_key"],
                        secret_key=self.config["secret_key"],
                        secure=self.config["secure"],
                        region=self.config["region"],
                        http_client=self._http,
                    )
                client = self._minio
        return client

    def _object_name(self, checksum: str, index: int) -> str:
        check_piece_address(checksum, index)
        return f"{self._pieces_prefix}{checksum[0:2]}/{checksum}.{index}"

    def _unavailable(self, exc: BaseException, action: str) -> StorageError | None:
        """The domain error for a failure of the SDK or the network, or None if ``exc`` is neither."""
        where = f"s3 location {self.config['endpoint']}/{self.bucket}"
        if isinstance(exc, S3Error):
            if exc.code == "NoSuchBucket":
                self._bucket_ready = False
            if exc.code in _PIECE_MISSING_CODES:
                return PieceMissing(f"{where}: {action}: {exc.code}")
            if exc.code == "InvalidObjectState":
                return NotRestored(f"{where}: {action}: {exc.code}: the object is archived and not restored")
            return StorageUnavailable(f"{where}: {action}: {exc.code}: {exc.message}")
        # MaxRetryError and friends are urllib3.HTTPError, not OSError
        if isinstance(exc, MinioException | urllib3.exceptions.HTTPError | OSError):
            return StorageUnavailable(f"{where}: {action}: {exc}")
        return None

    @contextlib.contextmanager
    def _sdk_errors(self, action: str, upload: ExactReader | None = None) -> Iterator[None]:
        """Translate SDK and network failures into domain errors; the upload stream's own
        failures and anything else propagate unchanged."""
        try:
            yield
        except Exception as exc:
            if upload is not None and exc is upload.source_error:
                raise
            error = self._unavailable(exc, action)
            if error is None:
                raise
            raise error from exc

    def _ensure_bucket(self, client: Minio) -> None:
        if self._bucket_ready or not self.config["create_bucket"]:
            return
        if not client.bucket_exists(self.bucket):
            try:
                client.make_bucket(self.bucket)
            except S3Error as exc:
                # another worker created it in between
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise
        self._bucket_ready = True

    def write_piece(self, checksum: str, index: int, stream: BinaryIO, length: int) -> None:
        name = self._object_name(checksum, index)
        check_byte_range(0, length)
        reader = ExactReader(stream, length)
        # stay within S3's 10,000-part limit whatever the piece size
        part_size = max(self.part_size, -(-length // MAX_MULTIPART_COUNT), MIN_PART_SIZE)
        client = self._client()
        with self._sdk_errors(f"write {name}", upload=reader):
            self._ensure_bucket(client)
            # a single PUT or a multipart upload: either way S3 shows the object only once
            # complete, and minio aborts the multipart upload when the stream fails.
            # One upload thread: parallel parts would buffer several parts at once.
            client.put_object(self.bucket, name, reader, length, part_size=part_size, num_parallel_uploads=1,
                              metadata={"x-amz-storage-class": self.storage_class} if self.storage_class else None)

    def read_piece(self, checksum: str, index: int, offset: int, length: int) -> Iterator[bytes]:
        name = self._object_name(checksum, index)
        check_byte_range(offset, length)
        client = self._client()
        if length == 0:
            # get_object reads to the end for length 0, and any Range on an empty object is
            # unsatisfiable, so only check that the piece is there and long enough
            if self._stat(client, name).size < offset:
                raise PieceMissing(f"s3 object {name} is shorter than offset {offset}")
            return
        with self._sdk_errors(f"read {name}"):
            response = client.get_object(self.bucket, name, offset=offset, length=length)
        try:
            if offset and response.status != 206:
                raise StorageUnavailable(f"s3 location ignored the Range of a read of {name}")
            # decode_content=False: the stored bytes, even if a Content-Encoding were set
            chunks = response.stream(READ_CHUNK, decode_content=False)
            remaining = length
            while remaining:
                # a dropped connection or a read timeout surfaces here, as a urllib3 error
                with self._sdk_errors(f"read {name}"):
                    chunk = next(chunks, b"")
                if not chunk:
                    raise PieceMissing(
                        f"s3 object {name} is truncated: {length - remaining} of {length} bytes"
                    )
                # only a 200 with the whole object (offset 0) can run past the range
                chunk = chunk[:remaining]
                remaining -= len(chunk)
                yield chunk
        finally:
            # also runs when the consumer closes the generator early; the connection is then
            # dropped rather than drained, which is cheaper than reading the rest of a piece
            response.close()
            response.release_conn()

    def _stat(self, client: Minio, name: str) -> Object:
        with self._sdk_errors(f"stat {name}"):
            stat = client.stat_object(self.bucket, name)
        return stat

    def delete_piece(self, checksum: str, index: int) -> None:
        name = self._object_name(checksum, index)
        try:
            with self._sdk_errors(f"delete {name}"):
                # S3 answers 204 for an absent key; NoSuchKey is caught for stores that do not
                self._client().remove_object(self.bucket, name)
        except PieceMissing:
            pass

    can_move_pieces = True

    def move_piece(self, checksum: str, index: int, new_checksum: str, new_index: int) -> None:
        source, target = self._object_name(checksum, index), self._object_name(new_checksum, new_index)
        client = self._client()
        # a server-side copy (pieces are at most 5 GiB, CopyObject's limit), then the old name goes
        with self._sdk_errors(f"move {source}"):
            client.copy_object(self.bucket, target, CopySource(self.bucket, source))
        self.delete_piece(checksum, index)

    def piece_exists(self, checksum: str, index: int) -> bool:
        name = self._object_name(checksum, index)
        try:
            self._stat(self._client(), name)
        except PieceMissing:
            # a HEAD answer has no body, so a missing bucket reads as NoSuchKey too; "absent"
            # must not be reported for a location that cannot answer
            self.health()
            return False
        return True

    def prepare(self) -> None:
        # reachable, credentials accepted, bucket there (made now with create_bucket)
        client = self._client()
        with self._sdk_errors("bucket check"):
            self._ensure_bucket(client)
        self.health()

    def health(self) -> None:
        with self._sdk_errors("health check"):
            exists = self._client().bucket_exists(self.bucket)
        if not exists:
            raise StorageUnavailable(f"s3 location {self.config['endpoint']}: bucket {self.bucket} missing")

    def list_pieces(self) -> Iterator[tuple[str, int]]:
        client = self._client()
        objects = iter(client.list_objects(self.bucket, prefix=self._pieces_prefix, recursive=True))
        while True:
            # list_objects pages lazily, so each step may make a request that can fail
            with self._sdk_errors("list pieces"):
                obj = next(objects, None)
            if obj is None:
                return
            parsed = self._parse_object_name(obj.object_name or "")
            if parsed is not None:
                yield parsed

    def _parse_object_name(self, name: str) -> tuple[str, int] | None:
        fan_out, slash, base = name.removeprefix(self._pieces_prefix).partition("/")
        parsed = parse_piece_name(base) if slash else None
        # the fan-out must match the name, or the piece is not where reads look for it
        if parsed is None or parsed[0][0:2] != fan_out:
            return None
        return parsed

    def restore_object(self, checksum: str, index: int, days: int, tier: str) -> None:
        """RestoreObject of one piece: 202 started, 200 already restored (its expiry extended), 409 under way."""
        name = self._object_name(checksum, index)
        body = (f"<RestoreRequest><Days>{int(days)}</Days><GlacierJobParameters><Tier>{escape(tier)}</Tier>"
                "</GlacierJobParameters></RestoreRequest>").encode()
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                   "Content-Type": "application/xml"}
        try:
            with self._sdk_errors(f"restore {name}"):
                # the SDK has no RestoreObject; _execute signs and sends the request as its own methods do
                self._client()._execute("POST", self.bucket, name, body=body, headers=headers,
                                        query_params={"restore": ""})
        except StorageUnavailable as exc:
            cause = exc.__cause__
            # minio takes any 2xx but 200/204/206 for an invalid response: S3's 202 Accepted is the usual answer
            if isinstance(cause, InvalidResponseError) and getattr(cause, "_code", None) == 202:
                return
            if isinstance(cause, S3Error) and cause.code == "RestoreAlreadyInProgress":
                return
            raise

    def restore_header(self, checksum: str, index: int) -> tuple[str | None, str | None]:
        """(x-amz-storage-class, x-amz-restore) of the piece's object."""
        name = self._object_name(checksum, index)
        headers = self._stat(self._client(), name).metadata
        return headers.get("x-amz-storage-class"), headers.get("x-amz-restore")

    def close(self) -> None:
        with self._lock:
            http, self._http, self._minio = self._http, None, None
            self._bucket_ready = False
        if http is not None:
            http.clear()


class S3Restore(RestoreCapability):
    """RestoreObject and ``x-amz-restore`` of an S3 location whose pieces are in an archive class."""

    def __init__(self, location: S3Location):
        self.location = location
        self.storage_class = location.storage_class or "GLACIER"
        self.tier: str = location.config.get("restore_tier", "Standard")

    @property
    def estimate_seconds(self) -> float:
        return RESTORE_ESTIMATES[(self.storage_class, self.tier)]

    @property
    def check_every_seconds(self) -> float:
        return self.location.config.get("restore_check_seconds", 300.0)

    def start(self, checksum: str, index: int, days: int) -> None:
        self.location.restore_object(checksum, index, days, self.tier)

    def status(self, checksum: str, index: int) -> RestoreStatus:
        storage_class, restore = self.location.restore_header(checksum, index)
        if (storage_class or "STANDARD") not in ARCHIVE_CLASSES:
            return RestoreStatus(RestoreStatus.RESTORED)  # written before the class was set: read directly
        ongoing = _ONGOING.search(restore or "")
        if ongoing is None:
            return RestoreStatus(RestoreStatus.ARCHIVED)
        if ongoing.group(1) == "true":
            return RestoreStatus(RestoreStatus.RESTORING)
        expiry = _EXPIRY.search(restore or "")
        expires_at = None
        if expiry is not None:
            with contextlib.suppress(TypeError, ValueError):
                expires_at = email.utils.parsedate_to_datetime(expiry.group(1)).astimezone(dt.UTC)
        if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
            return RestoreStatus(RestoreStatus.ARCHIVED)
        return RestoreStatus(RestoreStatus.RESTORED, expires_at=expires_at)
