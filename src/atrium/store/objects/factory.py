"""Builds the ObjectStore the ``object_store`` settings name."""

from __future__ import annotations

import importlib
from pathlib import Path

import anyio

from atrium.store.objects.local import LocalObjectStore
from atrium.store.objects.ports import ObjectStore
from atrium.store.objects.settings import ObjectStoreSettings


async def build_object_store(settings: ObjectStoreSettings, *, uploads_dir: Path) -> ObjectStore:
    """``local``: files under ``uploads_dir``; ``s3``: the configured bucket (aiobotocore, imported only then,
    in a thread: importing botocore reads many files)."""
    if settings.backend == "s3":
        s3 = await anyio.to_thread.run_sync(importlib.import_module, "atrium.store.objects.s3")
        store: ObjectStore = await s3.S3ObjectStore.connect(settings)
        return store
    return LocalObjectStore(uploads_dir)
