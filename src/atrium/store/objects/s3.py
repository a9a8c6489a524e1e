"""The ObjectStore on any S3-compatible store (port: ``ports.py``), through aiobotocore: the scale profile.

One client per process (its connection pool), built by :meth:`S3ObjectStore.connect` and closed by
``aclose``. Keys live under the configured ``prefix`` in the bucket. botocore's errors are translated here:
a missing key is ``ObjectMissing``, anything else ``ObjectStoreUnavailable`` naming only the S3 error code
or the exception's class (never a credential, an endpoint's signature or a key's value).

Non-AWS stores differ in which integrity checksums they accept: checksums are sent and checked only when an
operation requires them (``when_required``), as MinIO, Ceph and most others expect.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from atrium.store.objects.ports import ObjectMissing, ObjectStoreUnavailable, check_key
from atrium.store.objects.settings import ObjectStoreSettings

MISSING = ("NoSuchKey", "404", "NotFound")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def _unavailable(action: str, exc: Exception) -> ObjectStoreUnavailable:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "error"))[:60]
        return ObjectStoreUnavailable(f"The object store refused to {action} ({code}).")
    return ObjectStoreUnavailable(f"The object store could not {action} ({type(exc).__name__}).")


def _warm(session: AioSession) -> None:
    """Load botocore's data files (the S3 models, endpoints, retry rules) into the session's loader cache:
    in a thread, so creating the client reads nothing from disk on the event loop."""
    loader = session.get_component("data_loader")
    for kind in ("service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2"):
        with contextlib.suppress(Exception):
            loader.load_service_model("s3", kind, api_version=None)  # the call (and cache key) botocore uses
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        with contextlib.suppress(Exception):
            loader.load_data(name)


class S3ObjectStore:
    """Objects in ``bucket`` under ``prefix``, over one aiobotocore S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str, closer: contextlib.AsyncExitStack | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._closer = closer

    @classmethod
    async def connect(cls, settings: ObjectStoreSettings) -> S3ObjectStore:
        """Build the client (no request is made: a store that is down fails the first operation, not start-up)."""
        assert settings.bucket is not None
        session = get_session()
        await anyio.to_thread.run_sync(_warm, session)
        config = AioConfig(connect_timeout=settings.connect_timeout_s, read_timeout=settings.read_timeout_s,
                           retries={"max_attempts": settings.max_attempts, "mode": "standard"},
                           max_pool_connections=settings.max_connections,
                           s3={"addressing_style": settings.addressing_style},
                           request_checksum_calculation="when_required",
                           response_checksum_validation="when_required")
        secret = settings.secret_access_key
        credentials: dict[str, Any] = {}
        if settings.access_key_id is not None and secret is not None:
            credentials = {"aws_access_key_id": settings.access_key_id.get_secret_value(),
                           "aws_secret_access_key": secret.get_secret_value()}
            if settings.session_token is not None:
                credentials["aws_session_token"] = settings.session_token.get_secret_value()
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(session.create_client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config, **credentials))
        return cls(client, settings.bucket, settings.prefix, stack)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    async def put(self, key: str, data: bytes) -> None:
        try:
            await self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("store the file", exc) from exc

    async def get(self, key: str) -> bytes:
        try:
            answer = await self.client.get_object(Bucket=self.bucket, Key=self._name(key))
            async with answer["Body"] as body:
                return bytes(await body.read())
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in MISSING:
                raise ObjectMissing("The stored file is missing.") from None
            raise _unavailable("read the file", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("read the file", exc) from exc

    async def keys(self, folder: str) -> list[str]:
        start = self._name(folder) + "/"
        found: list[str] = []
        try:
            async for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                                    Prefix=start):
                found.extend(self._key(item["Key"]) for item in page.get("Contents", ()))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("list the files", exc) from exc
        return sorted(found)

    async def delete_folder(self, folder: str) -> int:
        keys = await self.keys(folder)
        try:
            for first in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": self._name(key)} for key in keys[first:first + DELETE_BATCH]]
                answer = await self.client.delete_objects(Bucket=self.bucket,
                                                          Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    code = str(answer["Errors"][0].get("Code", "error"))[:60]
                    raise ObjectStoreUnavailable(f"The object store refused to delete the files ({code}).")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete the files", exc) from exc
        return len(keys)

    async def aclose(self) -> None:
        if self._closer is not None:
            await self._closer.aclose()
            self._closer = None
