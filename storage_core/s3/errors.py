"""S3's error codes with their HTTP statuses, the S3Error exception, and the mapping from domain errors.

The door renders an ``S3Error`` as S3's ``<Error>`` XML (``storage_core.s3.xml.error``). Codes, statuses
and default messages are S3's own (the "Error responses" page of the S3 API reference): SDKs decide on
retries and exception classes from the code and the status, so neither may be invented freely.
"""

from __future__ import annotations

from collections.abc import Mapping

from storage_core import errors as domain

# code -> (HTTP status, S3's default message)
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header you provided is invalid."),
    "AuthorizationQueryParametersError": (400, "Error parsing the query parameters."),
    "BadDigest": (400, "The Content-MD5 or checksum value that you specified did not match what the server "
                       "received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available. The bucket namespace is shared by "
                                 "all users of the system. Please select a different name and try again."),
    "BucketAlreadyOwnedByYou": (409, "The bucket that you tried to create already exists, and you own it."),
    "BucketNotEmpty": (409, "The bucket that you tried to delete is not empty."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP "
                            "header."),
    "InsufficientStorage": (507, "The storage locations of this bucket have no room for the upload."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS access key ID that you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 or checksum value that you specified is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found. The part might not have been "
                         "uploaded, or the specified ETag might not have matched the uploaded part's ETag."),
    "InvalidObjectState": (403, "The operation is not valid for the object's storage class."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. The parts list must be specified in "
                              "order by part number."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidToken": (400, "The provided token is malformed or otherwise invalid."),
    "KeyTooLongError": (400, "Your key is too long."),
    "MalformedTrailerError": (400, "The request contained trailing data that was not well-formed or did not "
                                   "conform to our published schema."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published "
                          "schema."),
    # ours, 403 like QuotaExceeded: waiting does not help before next month, and SDKs retry a 429
    "MonthlyDownloadLimit": (403, "The monthly download limit of this account is reached."),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified upload does not exist. The upload ID may be invalid, or the upload may "
                          "have been aborted or completed."),
    "NotFound": (404, "Not Found"),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "OperationAborted": (409, "A conflicting conditional operation is currently in progress against this "
                              "resource. Try again."),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    # ours (DESIGN 7): 403, which no SDK retries, since a retry cannot find more quota
    "QuotaExceeded": (403, "The read quota of this bucket does not cover this download."),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current time is too large."),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you "
                                   "provided. Check your key and signing method."),
    "SlowDown": (503, "Please reduce your request rate."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was "
                                       "computed."),
}


class S3Error(Exception):
    """An S3 error response: status, code, message, extra ``<Error>`` elements and response headers.

    ``S3Error("NoSuchKey")`` takes S3's status and message for the code; a code outside ``CODES`` needs
    an explicit ``status`` (a typo must not become a 200 or a 500 silently).
    """

    def __init__(self, code: str, message: str | None = None, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None):
        known = CODES.get(code)
        if known is None and status is None:
            raise ValueError(f"unknown S3 error code {code!r}: give its HTTP status")
        self.code = code
        self.status: int = status if status is not None else known[0] if known else 500
        self.message = message or (known[1] if known else code)
        self.headers: dict[str, str] = dict(headers or {})
        # extra child elements of <Error>, in order (e.g. Region, RequestTime, StringToSign)
        self.extra: dict[str, str] = dict(extra or {})
        super().__init__(f"{self.code}: {self.message}")

    def __repr__(self) -> str:
        return f"S3Error({self.code!r}, {self.message!r}, status={self.status})"


def _checked(code: str) -> str:
    if code not in CODES:
        raise ValueError(code)
    return code


# For the domain errors whose code is not one of S3's: most specific class first, the first match wins.
_BY_CLASS: tuple[tuple[type[domain.StorageError], str], ...] = (
    # only nearline copies and none cached (restoring or not): S3's answer for a GLACIER object not restored
    (domain.NearlineOnly, _checked("InvalidObjectState")),
    (domain.BucketNotFound, _checked("NoSuchBucket")),
    (domain.ObjectNotFound, _checked("NoSuchKey")),
    (domain.UploadNotFound, _checked("NoSuchUpload")),
    (domain.NotFound, _checked("NotFound")),
    (domain.BucketExists, _checked("BucketAlreadyExists")),
    (domain.BucketNotEmpty, _checked("BucketNotEmpty")),
    # the remaining conflicts are concurrent changes of the same thing: S3 says OperationAborted
    (domain.Conflict, _checked("OperationAborted")),
    (domain.Unauthorized, _checked("AccessDenied")),
    (domain.Forbidden, _checked("AccessDenied")),
    # a retry later can succeed: SlowDown is the 503 every SDK backs off and retries on
    (domain.ConcurrentDownloadLimit, _checked("SlowDown")),
    (domain.PresignUnavailable, _checked("NotImplemented")),
    (domain.StorageUnavailable, _checked("ServiceUnavailable")),
    (domain.DatabaseUnavailable, _checked("ServiceUnavailable")),
)


def from_storage_error(exc: domain.StorageError) -> S3Error:
    """The S3 error for a domain error raised by a service.

    A domain error whose code is already one of S3's keeps it (InvalidArgument, BadDigest,
    EntityTooLarge, InvalidRange, PreconditionFailed, QuotaExceeded, MonthlyDownloadLimit, and later
    ones such as InvalidPart); ``NotFound`` and the codes S3 lacks are mapped by class; anything else
    is an ``InternalError`` whose message does not leak the detail. Headers (``Retry-After``,
    ``Content-Range``) are kept.
    """
    if exc.code in CODES and exc.code != "NotFound":
        code = exc.code
    else:
        code = next((code for cls, code in _BY_CLASS if isinstance(exc, cls)), "InternalError")
    # S3's own wording where the code says it all (scripts match it; <Resource> names the thing),
    # the service's detail where it explains a refusal
    message = None if code in _S3_WORDING or exc.detail == exc.title else exc.detail
    return S3Error(code, message, headers=exc.headers)


_S3_WORDING = frozenset({"NoSuchBucket", "NoSuchKey", "NoSuchUpload", "BucketAlreadyExists", "BucketNotEmpty",
                         "InternalError"})
