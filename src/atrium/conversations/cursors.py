"""Opaque cursors: what a page or a sync left off at, handed to the client as a short string it sends back
unchanged (URL-safe base64 of a small JSON object). A cursor the client made up or mangled is
``InvalidRequest`` (422), never a server error."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from atrium.errors import InvalidRequest


def encode_cursor(**values: str | int) -> str:
    raw = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, **fields: type) -> dict[str, Any]:
    """The values of ``cursor``; each of ``fields`` must be there with its type (``str`` or ``int``)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if not isinstance(values, dict) or any(
            type(values.get(name)) is not kind for name, kind in fields.items()):
        raise InvalidRequest("cursor is not one this API gave out.")
    return values
