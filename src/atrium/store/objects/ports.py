"""The ObjectStore port: named byte blobs, kept until deleted. Uploads wait in it for their ingestion job
(written by the API process, read by whichever process runs the job, deleted when the job ends).

A key is a ``/``-separated path of segments made of ``A-Z a-z 0-9 . _ -`` (no empty, ``.`` or ``..``
segment), at most ``MAX_KEY`` characters: the same key means the same object in every adapter, and no key
can name something outside the store. A *folder* is a key prefix: ``delete_folder("a/b")`` removes every
object whose key starts with ``a/b/``.
"""

from __future__ import annotations

import re
from typing import Protocol

from atrium.errors import AppError, NotReady

MAX_KEY = 900
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class ObjectMissing(AppError):
    """No object has this key (it was never written, or was deleted)."""

    status_code = 404
    code = "object_missing"


class ObjectStoreUnavailable(NotReady):
    """The store could not be reached or refused the request (the message never holds a credential)."""

    code = "object_store_unavailable"


def check_key(key: str) -> str:
    """``key`` if it is a valid key (see the module's docstring), else ``ValueError``."""
    if not key or len(key) > MAX_KEY or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid object key: {key[:80]!r}")
    for segment in key.split("/"):
        if segment in (".", "..") or not _SEGMENT.match(segment):
            raise ValueError(f"invalid object key: {key[:80]!r}")
    return key


class ObjectStore(Protocol):
    """Named byte blobs. ``put`` replaces an existing object; ``get`` raises ``ObjectMissing`` for a key
    with no object; every failure to reach the store is ``ObjectStoreUnavailable``."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def keys(self, folder: str) -> list[str]:
        """Every key under ``folder`` (``folder/...``), sorted."""
        ...

    async def delete_folder(self, folder: str) -> int:
        """Delete every object under ``folder``; returns how many there were (deleting none is no error)."""
        ...

    async def aclose(self) -> None: ...
