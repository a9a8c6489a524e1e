"""The ObjectStore on a local directory (port: ``ports.py``): the embedded default, ``data_dir/uploads``.

Objects are 0600 files in 0700 directories (``atrium.store.files``), written to a temporary name and renamed
into place so a reader never sees half an object. All file-system work runs in a worker thread.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import anyio

from atrium.store.files import private_dir, write_private
from atrium.store.objects.ports import ObjectMissing, ObjectStoreUnavailable, check_key


class LocalObjectStore:
    """Objects as files under ``root`` (a key's segments are its path below ``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            private_dir(path.parent)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                write_private(partial, data)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)

        try:
            await anyio.to_thread.run_sync(write)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"The upload store cannot be written ({type(exc).__name__}).") from exc

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await anyio.to_thread.run_sync(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectMissing("The stored file is missing.") from None
        except OSError as exc:
            raise ObjectStoreUnavailable(f"The upload store cannot be read ({type(exc).__name__}).") from exc

    async def keys(self, folder: str) -> list[str]:
        base = self._path(folder)

        def walk() -> list[str]:
            if not base.is_dir():
                return []
            found = [path.relative_to(self.root).as_posix() for path in base.rglob("*")
                     if path.is_file() and not path.name.endswith(".part")]
            return sorted(found)

        return await anyio.to_thread.run_sync(walk)

    async def delete_folder(self, folder: str) -> int:
        base = self._path(folder)

        def remove() -> int:
            if not base.is_dir():
                return 0
            count = sum(1 for path in base.rglob("*") if path.is_file() and not path.name.endswith(".part"))
            shutil.rmtree(base, ignore_errors=True)
            return count

        return await anyio.to_thread.run_sync(remove)

    async def aclose(self) -> None:
        """Nothing to release."""
