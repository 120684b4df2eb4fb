"""S3's XML: builders of the response documents, and safe parsers of the request bodies.

Element names, nesting and list flattening follow the S3 API reference and botocore's S3 model (the
tests parse every document with botocore's own response parser). Responses carry the namespace
``http://s3.amazonaws.com/doc/2006-03-01/`` except ``<Error>``, which S3 sends without one.

Request bodies are parsed with defusedxml: no DTD, so no entity expansion (billion laughs) and no
external entity (file or URL reads); the size is bounded before parsing. Bodies with or without the
S3 namespace are accepted (SDKs send it, hand-written clients often do not). Any failure is
``MalformedXML``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from storage_core.s3.errors import S3Error
from storage_core.timeutil import as_utc

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_BODY = 4 * 1024 * 1024  # 10000 parts with checksums, or 1000 keys of 1 KiB, fit well within
MAX_DELETE_OBJECTS = 1000
MAX_PART_NUMBER = 10000
STANDARD = "STANDARD"

# characters XML 1.0 cannot carry at all, even escaped
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# ---- values ------------------------------------------------------------------------------------------

def timestamp(moment: dt.datetime) -> str:
    """S3's timestamp: ISO 8601 in UTC with milliseconds, ``2009-10-12T17:50:30.000Z``."""
    utc = as_utc(moment).astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def quote_etag(value: str) -> str:
    """An ETag as S3 writes it, in double quotes (``"d41d8cd9..."``, ``"...-3"``)."""
    return value if value.startswith('"') and value.endswith('"') and len(value) >= 2 else f'"{value}"'


def url_encode(value: str) -> str:
    """``encoding-type=url``: percent-encoding as clients undo it (``+`` and space both escaped, ``/`` kept)."""
    return quote(value, safe="/")


# ---- records the door fills in -----------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str | None = None


@dataclass(frozen=True)
class BucketEntry:
    name: str
    created_at: dt.datetime
    region: str | None = None


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    last_modified: dt.datetime
    etag: str
    size: int
    storage_class: str = STANDARD
    owner: Owner | None = None  # ListObjects V1 always has one; V2 only with fetch-owner=true
    checksum_algorithms: tuple[str, ...] = ()  # e.g. ("CRC32",)


@dataclass(frozen=True)
class ObjectListing:
    """One page of a bucket listing, shared by ListObjects V1 and V2."""

    bucket: str
    contents: Sequence[ObjectEntry]
    common_prefixes: Sequence[str] = ()
    prefix: str = ""
    delimiter: str | None = None
    max_keys: int = 1000
    is_truncated: bool = False
    encoding_type: str | None = None  # "url" or None


@dataclass(frozen=True)
class PartEntry:
    part_number: int
    last_modified: dt.datetime
    etag: str
    size: int
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm (crc32...) -> base64


@dataclass(frozen=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: dt.datetime
    owner: Owner
    storage_class: str = STANDARD


@dataclass(frozen=True)
class DeletedEntry:
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class DeleteFailure:
    key: str
    code: str
    message: str
    version_id: str | None = None


# ---- building ----------------------------------------------------------------------------------------

class _Doc:
    """A small builder: ``add(parent, name, value)`` skips None and checks the text can be XML."""

    def __init__(self, root: str, namespace: str | None = NS):
        self.root = ET.Element(root, {"xmlns": namespace} if namespace else {})

    @staticmethod
    def add(parent: ET.Element, name: str, value: object = None) -> ET.Element:
        child = ET.SubElement(parent, name)
        if value is not None:
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, dt.datetime):
                text = timestamp(value)
            else:
                text = str(value)
            if _NOT_XML.search(text):
                raise S3Error("InvalidArgument", f"The value of {name} holds characters XML cannot carry; "
                                                 "ask for encoding-type=url.")
            child.text = text
        return child

    def opt(self, parent: ET.Element, name: str, value: object) -> None:
        if value is not None:
            self.add(parent, name, value)

    def owner(self, parent: ET.Element, name: str, owner: Owner) -> None:
        element = self.add(parent, name)
        self.add(element, "ID", owner.id)
        self.opt(element, "DisplayName", owner.display_name)

    def bytes(self) -> bytes:
        return DECLARATION + ET.tostring(self.root, encoding="unicode").encode("utf-8")


def _checksum_elements(doc: _Doc, parent: ET.Element, checksums: dict[str, str]) -> None:
    for algorithm, value in sorted(checksums.items()):
        doc.add(parent, f"Checksum{algorithm.upper()}", value)


def error(err: S3Error, *, resource: str, request_id: str, host_id: str | None = None) -> bytes:
    """``<Error>``: Code, Message, the error's extra elements, Resource, RequestId (no namespace, as S3)."""
    doc = _Doc("Error", namespace=None)
    doc.add(doc.root, "Code", err.code)
    doc.add(doc.root, "Message", err.message)
    for name, value in err.extra.items():
        doc.add(doc.root, name, value)
    doc.add(doc.root, "Resource", resource)
    doc.add(doc.root, "RequestId", request_id)
    doc.opt(doc.root, "HostId", host_id)
    return doc.bytes()


def list_all_my_buckets(buckets: Iterable[BucketEntry], owner: Owner, *, prefix: str | None = None,
                        continuation_token: str | None = None) -> bytes:
    """ListBuckets' ``ListAllMyBucketsResult``."""
    doc = _Doc("ListAllMyBucketsResult")
    container = doc.add(doc.root, "Buckets")
    for bucket in buckets:
        element = doc.add(container, "Bucket")
        doc.add(element, "Name", bucket.name)
        doc.add(element, "CreationDate", bucket.created_at)
        doc.opt(element, "BucketRegion", bucket.region)
    doc.owner(doc.root, "Owner", owner)
    doc.opt(doc.root, "ContinuationToken", continuation_token)
    doc.opt(doc.root, "Prefix", prefix)
    return doc.bytes()


def _listing(doc: _Doc, page: ObjectListing, *, owners: bool) -> None:
    encode = url_encode if page.encoding_type == "url" else (lambda value: value)
    for entry in page.contents:
        element = doc.add(doc.root, "Contents")
        doc.add(element, "Key", encode(entry.key))
        doc.add(element, "LastModified", entry.last_modified)
        doc.add(element, "ETag", quote_etag(entry.etag))
        for algorithm in entry.checksum_algorithms:
            doc.add(element, "ChecksumAlgorithm", algorithm.upper())
        doc.add(element, "Size", entry.size)
        if owners and entry.owner is not None:
            doc.owner(element, "Owner", entry.owner)
        doc.add(element, "StorageClass", entry.storage_class)
    for prefix in page.common_prefixes:
        doc.add(doc.add(doc.root, "CommonPrefixes"), "Prefix", encode(prefix))


def list_objects_v2(page: ObjectListing, *, continuation_token: str | None = None,
                    next_continuation_token: str | None = None, start_after: str | None = None,
                    fetch_owner: bool = False) -> bytes:
    """ListObjectsV2's ``ListBucketResult``; KeyCount counts keys and common prefixes, as S3 does."""
    encode = url_encode if page.encoding_type == "url" else (lambda value: value)
    doc = _Doc("ListBucketResult")
    root = doc.root
    doc.add(root, "Name", page.bucket)
    doc.add(root, "Prefix", encode(page.prefix))
    doc.opt(root, "ContinuationToken", continuation_token)
    doc.add(root, "KeyCount", len(page.contents) + len(page.common_prefixes))
    doc.add(root, "MaxKeys", page.max_keys)
    doc.opt(root, "Delimiter", encode(page.delimiter) if page.delimiter is not None else None)
    doc.add(root, "IsTruncated", page.is_truncated)
    doc.opt(root, "NextContinuationToken", next_continuation_token if page.is_truncated else None)
    doc.opt(root, "StartAfter", encode(start_after) if start_after is not None else None)
    doc.opt(root, "EncodingType", page.encoding_type)
    _listing(doc, page, owners=fetch_owner)
    return doc.bytes()


def list_objects_v1(page: ObjectListing, *, marker: str = "", next_marker: str | None = None) -> bytes:
    """ListObjects' (V1) ``ListBucketResult``. S3 sends NextMarker only with a delimiter; without one
    clients continue from the last key, so it is sent here whenever the page is truncated."""
    encode = url_encode if page.encoding_type == "url" else (lambda value: value)
    doc = _Doc("ListBucketResult")
    root = doc.root
    doc.add(root, "Name", page.bucket)
    doc.add(root, "Prefix", encode(page.prefix))
    doc.add(root, "Marker", encode(marker))
    if page.is_truncated:
        last = next_marker if next_marker is not None else (
            max([entry.key for entry in page.contents] + list(page.common_prefixes), default=None))
        doc.opt(root, "NextMarker", encode(last) if last is not None else None)
    doc.add(root, "MaxKeys", page.max_keys)
    doc.opt(root, "Delimiter", encode(page.delimiter) if page.delimiter is not None else None)
    doc.add(root, "IsTruncated", page.is_truncated)
    doc.opt(root, "EncodingType", page.encoding_type)
    _listing(doc, page, owners=True)
    return doc.bytes()


def location_constraint(region: str | None) -> bytes:
    """GetBucketLocation: empty for us-east-1, as S3 answers (clients read empty as us-east-1)."""
    doc = _Doc("LocationConstraint")
    if region and region != "us-east-1":
        doc.root.text = region
    return doc.bytes()


def copy_object_result(etag: str, last_modified: dt.datetime, checksums: dict[str, str] | None = None) -> bytes:
    doc = _Doc("CopyObjectResult")
    doc.add(doc.root, "ETag", quote_etag(etag))
    doc.add(doc.root, "LastModified", last_modified)
    _checksum_elements(doc, doc.root, checksums or {})
    return doc.bytes()


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    doc = _Doc("InitiateMultipartUploadResult")
    doc.add(doc.root, "Bucket", bucket)
    doc.add(doc.root, "Key", key)
    doc.add(doc.root, "UploadId", upload_id)
    return doc.bytes()


def complete_multipart_upload_result(location: str, bucket: str, key: str, etag: str,
                                     checksums: dict[str, str] | None = None) -> bytes:
    doc = _Doc("CompleteMultipartUploadResult")
    doc.add(doc.root, "Location", location)
    doc.add(doc.root, "Bucket", bucket)
    doc.add(doc.root, "Key", key)
    doc.add(doc.root, "ETag", quote_etag(etag))
    _checksum_elements(doc, doc.root, checksums or {})
    return doc.bytes()


def list_parts_result(bucket: str, key: str, upload_id: str, parts: Sequence[PartEntry], *, owner: Owner,
                      part_number_marker: int = 0, next_part_number_marker: int | None = None,
                      max_parts: int = 1000, is_truncated: bool = False,
                      storage_class: str = STANDARD) -> bytes:
    doc = _Doc("ListPartsResult")
    root = doc.root
    doc.add(root, "Bucket", bucket)
    doc.add(root, "Key", key)
    doc.add(root, "UploadId", upload_id)
    doc.add(root, "PartNumberMarker", part_number_marker)
    last = next_part_number_marker if next_part_number_marker is not None else (
        parts[-1].part_number if parts else part_number_marker)
    doc.add(root, "NextPartNumberMarker", last)
    doc.add(root, "MaxParts", max_parts)
    doc.add(root, "IsTruncated", is_truncated)
    for part in parts:
        element = doc.add(root, "Part")
        doc.add(element, "PartNumber", part.part_number)
        doc.add(element, "LastModified", part.last_modified)
        doc.add(element, "ETag", quote_etag(part.etag))
        doc.add(element, "Size", part.size)
        _checksum_elements(doc, element, part.checksums)
    doc.owner(root, "Initiator", owner)
    doc.owner(root, "Owner", owner)
    doc.add(root, "StorageClass", storage_class)
    return doc.bytes()


def list_multipart_uploads_result(bucket: str, uploads: Sequence[UploadEntry], *, prefix: str = "",
                                  delimiter: str | None = None, key_marker: str = "", upload_id_marker: str = "",
                                  next_key_marker: str | None = None, next_upload_id_marker: str | None = None,
                                  max_uploads: int = 1000, is_truncated: bool = False,
                                  common_prefixes: Sequence[str] = (), encoding_type: str | None = None) -> bytes:
    encode = url_encode if encoding_type == "url" else (lambda value: value)
    doc = _Doc("ListMultipartUploadsResult")
    root = doc.root
    doc.add(root, "Bucket", bucket)
    doc.add(root, "KeyMarker", encode(key_marker))
    doc.add(root, "UploadIdMarker", upload_id_marker)
    doc.opt(root, "NextKeyMarker", encode(next_key_marker) if next_key_marker is not None else None)
    doc.opt(root, "NextUploadIdMarker", next_upload_id_marker)
    doc.add(root, "Prefix", encode(prefix))
    doc.opt(root, "Delimiter", encode(delimiter) if delimiter is not None else None)
    doc.add(root, "MaxUploads", max_uploads)
    doc.add(root, "IsTruncated", is_truncated)
    doc.opt(root, "EncodingType", encoding_type)
    for upload in uploads:
        element = doc.add(root, "Upload")
        doc.add(element, "Key", encode(upload.key))
        doc.add(element, "UploadId", upload.upload_id)
        doc.owner(element, "Initiator", upload.owner)
        doc.owner(element, "Owner", upload.owner)
        doc.add(element, "StorageClass", upload.storage_class)
        doc.add(element, "Initiated", upload.initiated)
    for common in common_prefixes:
        doc.add(doc.add(root, "CommonPrefixes"), "Prefix", encode(common))
    return doc.bytes()


def delete_result(deleted: Iterable[DeletedEntry], failures: Iterable[DeleteFailure], *, quiet: bool) -> bytes:
    """DeleteObjects' ``DeleteResult``; in quiet mode only the failures are listed, as S3 does."""
    doc = _Doc("DeleteResult")
    if not quiet:
        for entry in deleted:
            element = doc.add(doc.root, "Deleted")
            doc.add(element, "Key", entry.key)
            doc.opt(element, "VersionId", entry.version_id)
    for failure in failures:
        element = doc.add(doc.root, "Error")
        doc.add(element, "Key", failure.key)
        doc.opt(element, "VersionId", failure.version_id)
        doc.add(element, "Code", failure.code)
        doc.add(element, "Message", failure.message)
    return doc.bytes()


# ---- parsing -----------------------------------------------------------------------------------------

def read_body(stream: BinaryIO, limit: int = MAX_BODY) -> bytes:
    """The whole request body, refused with MaxMessageLengthExceeded past ``limit`` bytes."""
    data = bytearray()
    while len(data) <= limit:
        piece = stream.read(min(64 * 1024, limit + 1 - len(data)))
        if not piece:
            return bytes(data)
        data += piece
    raise S3Error("MaxMessageLengthExceeded", f"Your request was too big: at most {limit} bytes are accepted.")


def _malformed(why: str | None = None) -> S3Error:
    return S3Error("MalformedXML", None if why is None else
                   f"The XML you provided was not well-formed or did not validate against our published schema: "
                   f"{why}.")


def _local(element: ET.Element) -> str:
    tag = element.tag
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        if namespace != NS:
            raise _malformed(f"unexpected namespace {namespace!r}")
        return name
    return tag


def parse(body: bytes, root: str, *, limit: int = MAX_BODY) -> ET.Element:
    """The root element of a request body named ``root``; MalformedXML for anything else."""
    if len(body) > limit:
        raise S3Error("MaxMessageLengthExceeded")
    if not body.strip():
        raise _malformed("the body is empty")
    try:
        element = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError):
        # ValueError also covers what expat rejects outright (a body that is not UTF-8, ...)
        raise _malformed() from None
    if _local(element) != root:
        raise _malformed(f"the root element must be {root}")
    return element


def _children(element: ET.Element) -> list[tuple[str, ET.Element]]:
    return [(_local(child), child) for child in element]


def one_text(element: ET.Element, name: str, *, required: bool = True) -> str | None:
    """The text of the one child ``name`` of ``element`` (MalformedXML if repeated, or missing and required)."""
    return _one_text(element, name, required=required)


def _one_text(element: ET.Element, name: str, *, required: bool = True) -> str | None:
    found = [child for local, child in _children(element) if local == name]
    if len(found) > 1:
        raise _malformed(f"{name} is given more than once")
    if not found:
        if required:
            raise _malformed(f"{name} is missing")
        return None
    return found[0].text or ""


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str  # without the quotes clients may or may not send
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm (crc32...) -> base64


def parse_complete_multipart_upload(body: bytes, *, limit: int = MAX_BODY) -> list[CompletedPart]:
    """The parts of a CompleteMultipartUpload body, checked to be in ascending part-number order.

    Raises MalformedXML (no part, a part without PartNumber or ETag, more than 10000 parts),
    InvalidArgument (a part number outside 1..10000), InvalidPartOrder (not ascending).
    """
    root = parse(body, "CompleteMultipartUpload", limit=limit)
    parts: list[CompletedPart] = []
    for name, element in _children(root):
        if name != "Part":
            continue  # newer SDKs may add elements; S3 ignores what it does not know
        if len(parts) >= MAX_PART_NUMBER:
            raise _malformed(f"more than {MAX_PART_NUMBER} parts")
        number_text = (_one_text(element, "PartNumber") or "").strip()
        if not number_text.isascii() or not number_text.isdigit() or not 1 <= int(number_text) <= MAX_PART_NUMBER:
            raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, "
                                             "inclusive", extra={"ArgumentName": "partNumber",
                                                                 "ArgumentValue": number_text[:20]})
        etag = (_one_text(element, "ETag") or "").strip().strip('"')
        if not etag:
            raise _malformed("a Part has an empty ETag")
        checksums = {local[len("Checksum"):].lower(): (child.text or "").strip()
                     for local, child in _children(element) if local.startswith("Checksum")}
        parts.append(CompletedPart(int(number_text), etag, checksums))
    if not parts:
        raise _malformed("at least one Part is required")
    if any(b.part_number <= a.part_number for a, b in itertools.pairwise(parts)):
        raise S3Error("InvalidPartOrder")
    return parts


@dataclass(frozen=True)
class ObjectIdentifier:
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class DeleteRequest:
    objects: list[ObjectIdentifier]
    quiet: bool = False


def parse_delete(body: bytes, *, limit: int = MAX_BODY) -> DeleteRequest:
    """The keys of a DeleteObjects body: 1 to 1000 ``Object`` elements with a ``Key``, and ``Quiet``."""
    root = parse(body, "Delete", limit=limit)
    objects: list[ObjectIdentifier] = []
    for name, element in _children(root):
        if name != "Object":
            continue
        if len(objects) >= MAX_DELETE_OBJECTS:
            raise _malformed(f"at most {MAX_DELETE_OBJECTS} keys may be deleted at once")
        key = _one_text(element, "Key")
        objects.append(ObjectIdentifier(key or "", _one_text(element, "VersionId", required=False)))
    if not objects:
        raise _malformed("at least one Object is required")
    quiet_text = _one_text(root, "Quiet", required=False)
    quiet = (quiet_text or "false").strip().lower()
    if quiet not in ("true", "false"):
        raise _malformed("Quiet must be true or false")
    return DeleteRequest(objects, quiet == "true")


def parse_create_bucket_configuration(body: bytes, *, limit: int = MAX_BODY) -> str | None:
    """The LocationConstraint of a CreateBucket body; None for an empty body or no constraint."""
    if not body.strip():
        return None
    root = parse(body, "CreateBucketConfiguration", limit=limit)
    value = _one_text(root, "LocationConstraint", required=False)
    return value.strip() or None if value is not None else None
