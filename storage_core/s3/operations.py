"""The S3 operations: each reads its request, calls one service and writes S3's answer.

GetObject and HeadObject serve in every profile; every other operation is tagged ``storage`` (the
downloader answers 501 NotImplemented to them). Rules (permissions, quota, ranges, conditions,
names) are the services' and ``http_semantics``'; what is here is S3's wire format.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Response

from profiles import profile
from storage_core.checksums import HEADER_PREFIX, algorithm_of
from storage_core.cursors import decode_cursor, encode_cursor
from storage_core.db import connection
from storage_core.delivery import socket_sender, watch_socket
from storage_core.errors import BucketExists, InvalidArgument, ObjectNotFound, StorageError
from storage_core.http_semantics import Conditions, http_date, parse_content_md5, validate_content_type
from storage_core.names import validate_bucket_name
from storage_core.s3 import xml
from storage_core.s3.chunked import AwsChunkedBody, content_encoding_to_store, request_body, trailer_names
from storage_core.s3.door import XML, S3Call
from storage_core.s3.errors import S3Error, from_storage_error
from storage_core.services.downloads import Download
from storage_core.services.multipart import RequestedPart
from storage_core.services.permissions import bucket_access
from storage_core.services.resolve import ByKey, Target
from storage_core.services.restore import AVAILABLE, QUEUED, RESTORING
from storage_core.services.uploads import ObjectMetadata
from storage_core.spool import Digests

log = logging.getLogger(__name__)

MAX_KEYS = 1000
MAX_METADATA_BYTES = 2048  # S3's limit on the x-amz-meta-* headers of an object
KEEPALIVE_SECONDS = 10  # CompleteMultipartUpload: whitespace this often while the object is assembled
META = "x-amz-meta-"
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type", "response-content-language": "Content-Language",
    "response-expires": "Expires", "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition", "response-content-encoding": "Content-Encoding",
}


def services(door: Any) -> Any:
    return door.container


def owner_of(account: str) -> xml.Owner:
    return xml.Owner(account, account)


def require_manage(door: Any, call: S3Call) -> None:
    """The bucket's owner or an admin (the native API's management rule); NoSuchBucket first."""
    if not call.principal.authenticated:
        bucket_exists(door, call.bucket)
    services(door).permission_service().require_manage(call.principal, call.bucket)


def bucket_exists(door: Any, bucket: str) -> Any:
    with connection(services(door).autocommit_engine()) as conn:
        return bucket_access(conn, bucket)


def s3_etag(target: Target) -> str:
    return f'"{target.s3_etag}"'


def int_param(call: S3Call, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.lstrip("-").isdigit() or int(raw) < minimum:
        raise S3Error("InvalidArgument", f"{name} must be an integer >= {minimum}",
                      extra={"ArgumentName": name, "ArgumentValue": raw[:40]})
    return min(int(raw), maximum) if maximum is not None else int(raw)


def encoding_type(call: S3Call) -> str | None:
    value = call.query.get("encoding-type")
    if value is None:
        return None
    if value != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      extra={"ArgumentName": "encoding-type", "ArgumentValue": value[:40]})
    return value


# ---- uploads: body, digests and metadata of a request ------------------------------------------------

def object_metadata(call: S3Call) -> ObjectMetadata:
    headers = call.headers
    try:
        content_type = validate_content_type(headers.get("content-type"))
    except InvalidArgument as exc:
        raise S3Error("InvalidArgument", exc.detail, extra={"ArgumentName": "Content-Type"}) from None
    user = {}
    size = 0
    for name in sorted(headers.names()):
        if name.startswith(META) and len(name) > len(META):
            value = ",".join(headers.get_all(name))
            user[name[len(META):]] = value
            size += len(name) - len(META) + len(value.encode("latin-1", "replace"))
    if size > MAX_METADATA_BYTES:
        raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum allowed metadata size of "
                                          f"{MAX_METADATA_BYTES} bytes.", status=400)
    return ObjectMetadata(content_type, content_encoding_to_store(headers.get("content-encoding")),
                          headers.get("content-disposition"), headers.get("cache-control"), user)


def upload_body(call: S3Call) -> tuple[Any, int | None, Digests, dict[str, str | None], Any]:
    """The stream of the bytes to store, their length, the declared digests, the header checksums to verify,
    and the checksums the decoder verifies in the trailer (asked once the body is read)."""
    request, headers = call.request, call.headers
    if request.content_length is None and "chunked" not in (headers.get("transfer-encoding") or "").lower():
        raise S3Error("MissingContentLength")
    stream = request_body(request.stream, call.verified, headers, request.content_length)
    # unsigned chunks without x-amz-decoded-content-length: None, read to the final chunk
    length = stream.decoded_length if isinstance(stream, AwsChunkedBody) else request.content_length
    try:
        md5 = parse_content_md5(headers.get("content-md5"))
    except InvalidArgument:
        raise S3Error("InvalidDigest") from None
    checksums: dict[str, str | None] = {}
    for name in headers.names():
        if name.startswith(HEADER_PREFIX) and name not in ("x-amz-checksum-algorithm", "x-amz-checksum-type",
                                                           "x-amz-checksum-mode"):
            checksums[_algorithm(name)] = headers.get(name)
    trailed = None
    if isinstance(stream, AwsChunkedBody) and trailer_names(headers.get("x-amz-trailer")):
        def trailed() -> dict[str, str]:  # the decoder checked the trailer: the service records it
            return dict(stream.checksums)
    return stream, length, Digests(md5=md5), checksums, trailed


def _algorithm(name: str) -> str:
    try:
        return algorithm_of(name)
    except InvalidArgument as exc:
        raise S3Error("InvalidRequest", exc.detail) from None


def checksum_headers(checksums: dict[str, str]) -> dict[str, str]:
    return {f"{HEADER_PREFIX}{algorithm}": value for algorithm, value in checksums.items()}


# ---- service -----------------------------------------------------------------------------------------

@profile("storage")
def list_buckets(door: Any, call: S3Call) -> Response:
    if not call.principal.authenticated:
        raise S3Error("AccessDenied", "Anonymous users cannot list buckets.")
    buckets = services(door).bucket_service().list(call.principal)
    entries = [xml.BucketEntry(b["name"], b["created_at"], door.region) for b in buckets]
    return door.xml_response(xml.list_all_my_buckets(entries, owner_of(call.principal.account)))


# ---- buckets -----------------------------------------------------------------------------------------

@profile("storage")
def create_bucket(door: Any, call: S3Call) -> Response:
    if not call.principal.authenticated:
        raise S3Error("AccessDenied", "Anonymous users cannot create buckets.")
    try:
        validate_bucket_name(call.bucket)
    except InvalidArgument as exc:
        raise S3Error("InvalidBucketName", exc.detail) from None
    body = request_body(call.request.stream, call.verified, call.headers, call.request.content_length)
    constraint = xml.parse_create_bucket_configuration(xml.read_body(body))
    if constraint not in (None, door.region) and not (constraint == "US" and door.region == "us-east-1"):
        raise S3Error("IllegalLocationConstraintException",
                      f"The {constraint} location constraint is incompatible for the region specific endpoint this "
                      "request was sent to.", status=400)
    acl = call.headers.get("x-amz-acl") or "private"
    if acl not in ("private", "public-read"):
        raise S3Error("NotImplemented", f"the canned ACL {acl!r} is not supported; use private or public-read")
    try:
        services(door).bucket_service().create({"name": call.bucket, "visibility": acl, "charged_read_quota": 0},
                                               call.principal)
    except BucketExists:
        if bucket_exists(door, call.bucket).owner == call.principal.account:
            raise S3Error("BucketAlreadyOwnedByYou") from None
        raise
    return Response(b"", status=200, headers={"Location": f"/{call.bucket}"})


@profile("storage")
def head_bucket(door: Any, call: S3Call) -> Response:
    found = bucket_exists(door, call.bucket)
    if not services(door).access_policy().can_read(call.principal, found, None):
        raise S3Error("AccessDenied")
    return Response(b"", status=200, headers={"x-amz-bucket-region": door.region})


@profile("storage")
def delete_bucket(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    services(door).bucket_service().delete(call.bucket)
    return Response(b"", status=204)


@profile("storage")
def get_bucket_location(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    return door.xml_response(xml.location_constraint(door.region))


def _listing(door: Any, call: S3Call, *, after: str, skip: str) -> tuple[Any, xml.ObjectListing]:
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter") or None
    max_keys = int_param(call, "max-keys", MAX_KEYS, maximum=MAX_KEYS)
    page = services(door).object_service().list_page(call.bucket, prefix=prefix, delimiter=delimiter, after=after,
                                                     skip=skip, max_keys=max_keys)
    owner = owner_of(bucket_exists(door, call.bucket).owner)
    classes = services(door).restore_service().storage_classes({o.checksum for o in page.objects})
    entries = [xml.ObjectEntry(o.key, o.last_modified, o.s3_etag, o.size, classes.get(o.checksum, xml.STANDARD),
                               owner=owner, checksum_algorithms=o.checksum_algorithms) for o in page.objects]
    listing = xml.ObjectListing(call.bucket, entries, page.prefixes, prefix, delimiter, max_keys, page.truncated,
                                encoding_type(call))
    return page, listing


@profile("storage")
def list_objects_v2(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    token = call.query.get("continuation-token")
    start_after = call.query.get("start-after")
    if token is not None:
        try:
            after, skip = decode_cursor(token, str, str)
        except InvalidArgument:
            raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                          extra={"ArgumentName": "continuation-token"}) from None
    else:
        after, skip = start_after or "", ""
    page, listing = _listing(door, call, after=after, skip=skip)
    following = encode_cursor(*page.resume) if page.truncated and page.resume else None
    owners = call.query.get("fetch-owner") == "true"
    return door.xml_response(xml.list_objects_v2(listing, continuation_token=token,
                                                 next_continuation_token=following, start_after=start_after,
                                                 fetch_owner=owners))


@profile("storage")
def list_objects(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    marker = call.query.get("marker", "")
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter") or None
    # a marker that is a common prefix (a NextMarker this service gave) stands for every key under it
    rest = marker[len(prefix):] if marker.startswith(prefix) else ""
    skip = marker if delimiter and rest.endswith(delimiter) and rest.find(delimiter) == len(rest) - len(delimiter) \
        else ""
    page, listing = _listing(door, call, after=marker, skip=skip)
    next_marker = page.last_item if page.truncated else None
    return door.xml_response(xml.list_objects_v1(listing, marker=marker, next_marker=next_marker))


# ---- objects: reading --------------------------------------------------------------------------------

def _range_header(call: S3Call) -> str | None:
    """S3 serves one range per GET: with several, it ignores the header and sends the whole object."""
    value = call.headers.get("range")
    if value is None:
        return None
    _unit, _, specs = value.partition("=")
    if sum(1 for spec in specs.split(",") if spec.strip()) > 1:
        return None
    return value


def _read(door: Any, call: S3Call) -> Response:
    headers = call.headers
    overrides = {RESPONSE_OVERRIDES[name]: value for name, value in call.query.items() if name in RESPONSE_OVERRIDES}
    if overrides and not call.principal.authenticated:
        raise S3Error("InvalidRequest", "Request specific response headers cannot be used for anonymous GET "
                                        "requests.")
    conditions = Conditions(method=call.method, range=_range_header(call), if_range=headers.get("if-range"),
                            if_match=headers.get("if-match"), if_none_match=headers.get("if-none-match"),
                            if_modified_since=headers.get("if-modified-since"),
                            if_unmodified_since=headers.get("if-unmodified-since"))
    # S3 never restores on a read (clients ask with RestoreObject): a GLACIER object not restored is
    # InvalidObjectState; HeadObject answers from the metadata with x-amz-storage-class / x-amz-restore
    download = services(door).download_service().open(ByKey(call.bucket, call.key), conditions, call.principal,
                                                      etag=s3_etag, restore_on_read=False,
                                                      residency_head=call.method == "HEAD")
    if download.body is not None:
        # refunds down to what the client received, and the cut of a client that stops reading
        download.body.attach(watch_socket(call.request.environ, door.send_timeout), socket_sender(call.request.environ))
    return Response(download.body, status=download.status, headers=_object_headers(download, call, overrides))


def _object_headers(download: Download, call: S3Call, overrides: dict[str, str]) -> dict[str, str]:
    target, out = download.target, dict(download.headers)
    if download.status == 304:
        return out
    for name, value in (("Content-Encoding", target.content_encoding),
                        ("Content-Disposition", target.content_disposition),
                        ("Cache-Control", target.cache_control)):
        if value:
            out[name] = value
    for name, value in (target.user_metadata or {}).items():
        out[META + name] = value
    if "-" in target.s3_etag:  # a multipart object: its ETag ends with the part count
        out["x-amz-mp-parts-count"] = target.s3_etag.rsplit("-", 1)[1]
    if (call.headers.get("x-amz-checksum-mode") or "").upper() == "ENABLED" and download.status == 200:
        out.update(checksum_headers(target.checksums or {}))
    residency = download.residency
    out["x-amz-storage-class"] = residency.storage_class if residency is not None else "STANDARD"
    if residency is not None and residency.state in (RESTORING, QUEUED):
        out["x-amz-restore"] = 'ongoing-request="true"'
    elif residency is not None and residency.state == AVAILABLE and residency.expires_at is not None:
        out["x-amz-restore"] = f'ongoing-request="false", expiry-date="{http_date(residency.expires_at)}"'
    out.update(overrides)
    return out


def get_object(door: Any, call: S3Call) -> Response:
    return _read(door, call)


def head_object(door: Any, call: S3Call) -> Response:
    return _read(door, call)


# ---- objects: writing --------------------------------------------------------------------------------

@profile("storage")
def put_object(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    stream, length, digests, checksums, trailed = upload_body(call)
    metadata = object_metadata(call)
    stored = services(door).upload_service().put(call.bucket, call.key, stream, length=length, expected=digests,
                                                 metadata=metadata, checksums=checksums, verified=trailed)
    return Response(b"", status=200, headers={"ETag": f'"{stored.s3_etag}"', **checksum_headers(stored.checksums)})


def _copy_source(call: S3Call) -> tuple[str, str]:
    raw = call.headers.get("x-amz-copy-source") or ""
    source, _, version = raw.partition("?")
    if version and version != "versionId=null":
        raise S3Error("NotImplemented", "object versions are not supported")
    bucket, _, key = unquote(source).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      extra={"ArgumentName": "x-amz-copy-source", "ArgumentValue": raw[:200]})
    return bucket, key


@profile("storage")
def copy_object(door: Any, call: S3Call) -> Response:
    source_bucket, source_key = _copy_source(call)
    require_manage(door, call)
    found = bucket_exists(door, source_bucket)
    if not services(door).access_policy().can_read(call.principal, found, source_key):
        raise S3Error("AccessDenied")
    directive = (call.headers.get("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.",
                      extra={"ArgumentName": "x-amz-metadata-directive", "ArgumentValue": directive[:40]})
    if (source_bucket, source_key) == (call.bucket, call.key) and directive == "COPY":
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                                        "itself without changing the object's metadata, storage class, website "
                                        "redirect location or encryption attributes.")
    metadata = object_metadata(call) if directive == "REPLACE" else None
    stored = services(door).object_service().copy(source_bucket, source_key, call.bucket, call.key, metadata)
    return door.xml_response(xml.copy_object_result(stored.s3_etag, stored.view["created_at"]))


@profile("storage")
def delete_object(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    with contextlib.suppress(ObjectNotFound):  # S3 answers 204 for a key that is not there
        services(door).object_service().delete(call.bucket, call.key)
    return Response(b"", status=204)


@profile("storage")
def delete_objects(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    body = request_body(call.request.stream, call.verified, call.headers, call.request.content_length)
    wanted = xml.parse_delete(xml.read_body(body))
    objects = services(door).object_service()
    deleted, failed = [], []
    for item in wanted.objects:
        try:
            objects.delete(call.bucket, item.key)
        except ObjectNotFound:
            pass
        except StorageError as exc:
            error = from_storage_error(exc)
            failed.append(xml.DeleteFailure(item.key, error.code, error.message))
            continue
        deleted.append(xml.DeletedEntry(item.key))
    return door.xml_response(xml.delete_result(deleted, failed, quiet=wanted.quiet))


@profile("storage")
def restore_object(door: Any, call: S3Call) -> Response:
    """RestoreObject: bring a GLACIER (nearline) object back for ``Days`` (the restore cache keeps it)."""
    body = request_body(call.request.stream, call.verified, call.headers, call.request.content_length)
    raw = xml.read_body(body)
    hours = None
    if raw.strip():
        days_text = xml.one_text(xml.parse(raw, "RestoreRequest"), "Days", required=False)
        if days_text is not None:
            days = days_text.strip()
            if not days.isascii() or not days.isdigit() or not 1 <= int(days) <= 30:
                raise S3Error("InvalidArgument", "Days must be an integer from 1 to 30 (the restore cache keeps a "
                                                 "copy at most 720 hours)",
                              extra={"ArgumentName": "Days", "ArgumentValue": days[:20]})
            hours = int(days) * 24
    state = services(door).restore_service().request_by_key(call.bucket, call.key, hours, call.principal)
    if state.state in (RESTORING, QUEUED):
        return Response(b"", status=202)
    if state.state == AVAILABLE and state.expires_at is not None:
        return Response(b"", status=200)  # restored already: its expiry is extended
    raise S3Error("InvalidObjectState", "Restore is not allowed for the object's current storage class.")


# ---- multipart uploads -------------------------------------------------------------------------------

@profile("storage")
def create_multipart_upload(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    upload = services(door).multipart_service().create(call.bucket, call.key, call.principal.account,
                                                       object_metadata(call))
    headers = {}
    if algorithm := call.headers.get("x-amz-checksum-algorithm"):
        headers["x-amz-checksum-algorithm"] = algorithm
    return door.xml_response(xml.initiate_multipart_upload_result(call.bucket, call.key, upload.upload_id),
                             headers=headers)


@profile("storage")
def upload_part(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    number = int_param(call, "partNumber", 0)
    if not 1 <= number <= xml.MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      extra={"ArgumentName": "partNumber", "ArgumentValue": call.query.get("partNumber", "")[:20]})
    stream, length, digests, checksums, trailed = upload_body(call)
    part = services(door).multipart_service().upload_part(call.bucket, call.query["uploadId"], number, stream,
                                                          length=length, expected=digests, checksums=checksums,
                                                          verified=trailed)
    return Response(b"", status=200, headers={"ETag": f'"{part.etag}"', **checksum_headers(part.checksums)})


@profile("storage")
def complete_multipart_upload(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    body = request_body(call.request.stream, call.verified, call.headers, call.request.content_length)
    parts = xml.parse_complete_multipart_upload(xml.read_body(body))
    requested = [RequestedPart(p.part_number, p.etag) for p in parts]
    # a wrong part list is answered at once; the assembly (a read of every byte) streams
    completion = services(door).multipart_service().begin_complete(call.bucket, call.query["uploadId"], requested)
    host = call.headers.get("host") or "localhost"
    location = f"{call.request.scheme}://{host}{call.resource}"

    def assemble() -> bytes:
        stored = completion.run()
        return xml.complete_multipart_upload_result(location, call.bucket, call.key, stored.s3_etag)

    return Response(_keepalive(assemble, call), status=200, content_type=XML)


def _keepalive(work: Any, call: S3Call) -> Iterator[bytes]:
    """S3's way of completing a large upload: 200 at once, whitespace while working, then the result or an
    ``<Error>`` (SDKs look for one in a 200 answer to CompleteMultipartUpload)."""
    yield xml.DECLARATION
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["body"] = work()
        except S3Error as exc:
            outcome["error"] = exc
        except StorageError as exc:
            outcome["error"] = from_storage_error(exc)
        except Exception:
            log.exception("CompleteMultipartUpload of %s failed", call.resource)
            outcome["error"] = S3Error("InternalError")
        finally:
            done.set()

    threading.Thread(target=run, name="complete-multipart", daemon=True).start()
    while not done.wait(KEEPALIVE_SECONDS):
        yield b" "
    if "error" in outcome:
        body = xml.error(outcome["error"], resource=call.resource, request_id=call.request_id)
    else:
        body = outcome["body"]
    yield body[len(xml.DECLARATION):] if body.startswith(xml.DECLARATION) else body


@profile("storage")
def abort_multipart_upload(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    services(door).multipart_service().abort(call.bucket, call.query["uploadId"])
    return Response(b"", status=204)


@profile("storage")
def list_parts(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    marker = int_param(call, "part-number-marker", 0)
    limit = int_param(call, "max-parts", 1000, maximum=1000)
    upload, parts, more = services(door).multipart_service().list_parts(call.bucket, call.query["uploadId"],
                                                                        marker, limit)
    entries = [xml.PartEntry(p.part_number, p.last_modified, p.etag, p.size, p.checksums) for p in parts]
    return door.xml_response(xml.list_parts_result(call.bucket, upload.key, upload.upload_id, entries,
                                                   owner=owner_of(upload.initiator), part_number_marker=marker,
                                                   max_parts=limit, is_truncated=more))


@profile("storage")
def list_multipart_uploads(door: Any, call: S3Call) -> Response:
    require_manage(door, call)
    limit = int_param(call, "max-uploads", 1000, maximum=1000)
    prefix = call.query.get("prefix", "")
    key_marker, id_marker = call.query.get("key-marker", ""), call.query.get("upload-id-marker", "")
    uploads, more = services(door).multipart_service().list_uploads(call.bucket, prefix, key_marker, id_marker,
                                                                    limit)
    entries = [xml.UploadEntry(u.key, u.upload_id, u.created_at, owner_of(u.initiator)) for u in uploads]
    last = entries[-1] if entries and more else None
    return door.xml_response(xml.list_multipart_uploads_result(
        call.bucket, entries, prefix=prefix, key_marker=key_marker, upload_id_marker=id_marker,
        next_key_marker=last.key if last else None, next_upload_id_marker=last.upload_id if last else None,
        max_uploads=limit, is_truncated=more, encoding_type=encoding_type(call)))


OPERATIONS = {
    "ListBuckets": list_buckets,
    "CreateBucket": create_bucket,
    "HeadBucket": head_bucket,
    "DeleteBucket": delete_bucket,
    "GetBucketLocation": get_bucket_location,
    "ListObjectsV2": list_objects_v2,
    "ListObjects": list_objects,
    "GetObject": get_object,
    "HeadObject": head_object,
    "PutObject": put_object,
    "CopyObject": copy_object,
    "DeleteObject": delete_object,
    "DeleteObjects": delete_objects,
    "CreateMultipartUpload": create_multipart_upload,
    "UploadPart": upload_part,
    "CompleteMultipartUpload": complete_multipart_upload,
    "AbortMultipartUpload": abort_multipart_upload,
    "ListParts": list_parts,
    "ListMultipartUploads": list_multipart_uploads,
    "RestoreObject": restore_object,
}
