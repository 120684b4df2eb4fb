"""Paging cursors: opaque base64url tokens holding the sort key of the last item of a page."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from storage_core.errors import InvalidArgument


def encode_cursor(*values: int | str) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The values of a cursor made by ``encode_cursor``, checked against ``types``; else 400."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        values = json.loads(raw)
        # bool is an int; a cursor this service made never holds one
        if (not isinstance(values, list) or len(values) != len(types)
                or not all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, types, strict=True))):
            raise ValueError
        return tuple(values)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("cursor is not one this service returned") from None
