"""HNSW vector index (hnswlib): one graph per tenant and collection, persisted beside the database."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import string
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio.to_thread
import hnswlib
import numpy as np

from atrium.errors import AppError, InvalidRequest
from atrium.gateway.ports import Vectors
from atrium.knowledge.ports import VectorHit
from atrium.knowledge.vector.common import (
    Ids,
    best_hits,
    check_batch,
    check_ids,
    check_name,
    check_query,
    normalise_rows,
)
from atrium.store.files import PRIVATE_FILE, private_dir, write_private

logger = logging.getLogger(__name__)

_FORMAT = 1
_SPACE = "cosine"
_INDEX_SUFFIX = ".hnsw"
_SIDECAR_SUFFIX = ".json"
# Mutations hold the write lock for one slice at a time so that searches interleave with a bulk load.
_WRITE_SLICE = 512
_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_MAX_FILE_NAME = 200
# hnswlib's file header starts with six size_t: offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData; vector bytes = label_offset - offsetData.
_HEADER = struct.Struct("<6Q")


class _ReadWriteLock:
    """Many readers or one writer. A waiting writer holds back new readers, except while a long reader
    (a save) runs: then searches keep flowing and the writer waits for the save either way."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._long_readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self, *, long: bool = False) -> Iterator[None]:
        with self._cond:
            while self._writer or (self._waiting_writers and not self._long_readers):
                self._cond.wait()
            self._readers += 1
            self._long_readers += long
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._long_readers -= long
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(eq=False)
class _Shard:
    """One collection's graph. ``live`` holds the searchable ids; ``maybe_deleted`` is a superset of
    the ids still occupying a slot marked deleted (hnswlib reuses such slots for new ids)."""

    index: Any  # hnswlib.Index (no type stubs)
    live: set[int]
    maybe_deleted: set[int]
    dirty: bool
    lock: _ReadWriteLock = field(default_factory=_ReadWriteLock)
    save_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(eq=False)
class _Tenant:
    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False
    shards: dict[str, _Shard] = field(default_factory=dict)


class HnswVectorIndex:
    """VectorIndex adapter on hnswlib HNSW graphs (cosine), one graph per (tenant, collection).

    - Graphs grow by doubling (``resize_index``). Deletion marks the id deleted; a later add of new ids
      reuses deleted slots, and re-adding a deleted id revives it with the new vector.
    - ``ef_search`` is the search breadth; hnswlib itself raises it to ``limit`` when ``limit`` is larger.
    - With a ``directory``, ``save()`` writes each changed graph to ``<dir>/<tenant>/<collection>.hnsw``
      plus a JSON sidecar (dimensions, live count, deleted ids, and a fingerprint of the graph file). Both
      are written to temporary files and moved into place with ``os.replace``, so a crash mid-save leaves
      the previous graph intact. Names are percent-encoded to ``[A-Za-z0-9_-%]`` (no path traversal). A
      tenant's graphs are loaded on its first use, in a worker thread. If the sidecar does not match the
      graph (a crash between the two renames) the deleted ids are recovered from the graph itself.
    - All hnswlib work runs in a worker thread. Searches share a per-graph lock; mutations take it
      exclusively for one slice of ``_WRITE_SLICE`` ids at a time.
    """

    def __init__(self, directory: Path | None, dimensions: int, *, M: int = 16, ef_construction: int = 200,
                 ef_search: int = 64, num_threads: int = 1, initial_capacity: int = 1024) -> None:
        if dimensions < 1 or M < 2 or ef_construction < 1 or ef_search < 1 or num_threads < 1:
            raise ValueError("dimensions, M, ef_construction, ef_search and num_threads must be positive")
        self.directory = Path(directory) if directory is not None else None
        self.dimensions = dimensions
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.num_threads = num_threads
        self.initial_capacity = max(16, initial_capacity)
        self._tenants: dict[str, _Tenant] = {}
        self._registry_lock = threading.Lock()

    async def add(self, tenant: str, collection: str, ids: Sequence[int], vectors: Vectors) -> None:
        check_name("tenant", tenant)
        check_name("collection", collection)
        await anyio.to_thread.run_sync(self._add_sync, tenant, collection, ids, vectors)

    async def delete(self, tenant: str, collection: str, ids: Sequence[int]) -> None:
        check_name("tenant", tenant)
        check_name("collection", collection)
        await anyio.to_thread.run_sync(self._delete_sync, tenant, collection, check_ids(ids))

    async def search(self, tenant: str, collections: Sequence[str] | None, vector: Vectors,
                     limit: int) -> list[VectorHit]:
        """Best ``limit`` hits over the given collections (``None``: all of the tenant's)."""
        check_name("tenant", tenant)
        query = check_query(vector, self.dimensions)
        if limit <= 0:
            return []
        return await anyio.to_thread.run_sync(self._search_sync, tenant, collections, query, limit)

    async def ids(self, tenant: str, collection: str) -> set[int]:
        check_name("tenant", tenant)
        return await anyio.to_thread.run_sync(self._ids_sync, tenant, collection)

    async def collections(self, tenant: str) -> list[str]:
        """The tenant's collections that hold at least one vector."""
        check_name("tenant", tenant)
        return await anyio.to_thread.run_sync(self._collections_sync, tenant)

    async def save(self) -> None:
        """Write every graph changed since the last save (atomically, one file pair per graph)."""
        if self.directory is not None:
            await anyio.to_thread.run_sync(self._save_sync)

    # -- worker-thread side -------------------------------------------------------------------------

    def _add_sync(self, tenant: str, collection: str, raw_ids: Sequence[int], raw_vectors: Vectors) -> None:
        ids, vectors = check_batch(raw_ids, raw_vectors, self.dimensions)
        if not len(ids):
            return
        shard = self._shard(tenant, collection, create_with=len(ids))
        assert shard is not None
        for start in range(0, len(ids), _WRITE_SLICE):
            with shard.lock.write():
                self._add_slice(shard, ids[start:start + _WRITE_SLICE], vectors[start:start + _WRITE_SLICE])

    def _add_slice(self, shard: _Shard, ids: Ids, vectors: Vectors) -> None:
        index = shard.index
        labels = ids.tolist()
        update = np.zeros(len(labels), dtype=bool)  # already in the graph: overwrite the vector in place
        revived = 0
        for row, label in enumerate(labels):
            if label in shard.live:
                update[row] = True
            elif label in shard.maybe_deleted:
                shard.maybe_deleted.discard(label)
                try:
                    index.unmark_deleted(label)
                except RuntimeError:  # its slot was since reused by another id: add it as new
                    continue
                update[row] = True
                revived += 1
        new_count = len(labels) - int(update.sum())
        vacant = index.element_count - len(shard.live) - revived
        required = index.element_count + max(0, new_count - vacant)
        if required > index.max_elements:
            index.resize_index(max(required, 2 * index.max_elements))
        try:
            if update.any():
                index.add_items(vectors[update], ids[update], num_threads=self.num_threads)
            if new_count:
                index.add_items(vectors[~update], ids[~update], num_threads=self.num_threads,
                                replace_deleted=True)
        except RuntimeError as exc:
            raise AppError("The vector index rejected an update.", code="vector_index_error") from exc
        finally:
            shard.dirty = True
        shard.live.update(labels)
        if len(shard.maybe_deleted) > 2 * max(vacant, 0) + 1024:
            shard.maybe_deleted = set(index.get_ids_list()) - shard.live

    def _delete_sync(self, tenant: str, collection: str, ids: list[int]) -> None:
        shard = self._shard(tenant, collection)
        if shard is None:
            return
        for start in range(0, len(ids), _WRITE_SLICE):
            with shard.lock.write():
                for label in ids[start:start + _WRITE_SLICE]:
                    if label in shard.live:
                        shard.index.mark_deleted(label)
                        shard.live.discard(label)
                        shard.maybe_deleted.add(label)
                        shard.dirty = True

    def _search_sync(self, tenant: str, collections: Sequence[str] | None, query: Vectors,
                     limit: int) -> list[VectorHit]:
        state = self._tenant(tenant)
        with state.lock:
            shards = dict(state.shards)
        names = list(shards) if collections is None else [name for name in collections if name in shards]
        hits: list[tuple[int, float]] = []
        for name in dict.fromkeys(names):
            shard = shards[name]
            with shard.lock.read():
                hits.extend(self._knn(shard, query, limit))
        return best_hits(hits, limit)

    def _knn(self, shard: _Shard, query: Vectors, limit: int) -> list[tuple[int, float]]:
        k = min(limit, len(shard.live))
        if k == 0:
            return []
        try:
            labels, distances = shard.index.knn_query(query, k=k, num_threads=1)
        except RuntimeError:
            # hnswlib found fewer than k live neighbours (a graph cut up by deletions): scan instead.
            live = np.fromiter(shard.live, dtype=np.int64, count=len(shard.live))
            matrix = normalise_rows(np.asarray(shard.index.get_items(live), dtype=np.float32))
            scores = matrix @ normalise_rows(query)
            return list(zip(live.tolist(), scores.tolist(), strict=True))
        return list(zip(labels[0].tolist(), (1.0 - distances[0]).tolist(), strict=True))

    def _ids_sync(self, tenant: str, collection: str) -> set[int]:
        state = self._tenant(tenant)
        with state.lock:
            shard = state.shards.get(collection)
        if shard is None:
            return set()
        with shard.lock.read():
            return set(shard.live)

    def _collections_sync(self, tenant: str) -> list[str]:
        state = self._tenant(tenant)
        with state.lock:
            return sorted(name for name, shard in state.shards.items() if shard.live)

    def _save_sync(self) -> None:
        with self._registry_lock:
            tenants = list(self._tenants.items())
        for tenant_name, tenant in tenants:
            with tenant.lock:
                shards = list(tenant.shards.items())
            for collection, shard in shards:
                if shard.dirty:
                    self._save_shard(tenant_name, collection, shard)

    # -- registry and files -------------------------------------------------------------------------

    def _tenant(self, tenant: str) -> _Tenant:
        with self._registry_lock:
            state = self._tenants.setdefault(tenant, _Tenant())
        if not state.loaded:
            with state.lock:
                if not state.loaded:
                    state.shards.update(self._load_tenant(tenant))
                    state.loaded = True
        return state

    def _shard(self, tenant: str, collection: str, *, create_with: int = 0) -> _Shard | None:
        state = self._tenant(tenant)
        with state.lock:
            shard = state.shards.get(collection)
            if shard is None and create_with:
                _file_name(tenant), _file_name(collection)  # refuse names that cannot be saved before accepting vectors
                index = hnswlib.Index(space=_SPACE, dim=self.dimensions)
                index.init_index(max_elements=max(self.initial_capacity, create_with), M=self.M,
                                 ef_construction=self.ef_construction, allow_replace_deleted=True)
                index.set_ef(self.ef_search)
                shard = state.shards[collection] = _Shard(index, set(), set(), dirty=True)
            return shard

    def _paths(self, tenant: str, collection: str) -> tuple[Path, Path, Path]:
        assert self.directory is not None
        folder = self.directory / _file_name(tenant)
        stem = _file_name(collection)
        return folder, folder / f"{stem}{_INDEX_SUFFIX}", folder / f"{stem}{_SIDECAR_SUFFIX}"

    def _save_shard(self, tenant: str, collection: str, shard: _Shard) -> None:
        folder, index_path, sidecar_path = self._paths(tenant, collection)
        private_dir(folder)  # 0700, and its files 0600: the graphs are derived from tenants' documents
        token = uuid.uuid4().hex
        index_tmp = folder / f"{index_path.name}.{token}.tmp"
        sidecar_tmp = folder / f"{sidecar_path.name}.{token}.tmp"
        with shard.save_lock, shard.lock.read(long=True):
            if not shard.dirty:
                return
            try:
                write_private(index_tmp, b"")  # 0600 from its creation: hnswlib writes into the file as it is
                shard.index.save_index(str(index_tmp))
                _fsync(index_tmp)
                deleted = set(shard.index.get_ids_list()) - shard.live
                sidecar = {
                    "format": _FORMAT, "tenant": tenant, "collection": collection, "space": _SPACE,
                    "dimensions": self.dimensions, "M": self.M, "ef_construction": self.ef_construction,
                    "count": len(shard.live), "deleted": sorted(deleted),
                    "index_file": _fingerprint(index_tmp),
                }
                write_private(sidecar_tmp, json.dumps(sidecar, separators=(",", ":")).encode())
                _fsync(sidecar_tmp)
                os.chmod(index_tmp, PRIVATE_FILE)  # whatever the library did to the mode
                os.replace(index_tmp, index_path)
                os.replace(sidecar_tmp, sidecar_path)
                _fsync_directory(folder)
            except (OSError, RuntimeError) as exc:
                for leftover in (index_tmp, sidecar_tmp):
                    leftover.unlink(missing_ok=True)
                raise AppError("Could not save the vector index.", code="vector_index_error") from exc
            shard.maybe_deleted = deleted
            shard.dirty = False

    def _load_tenant(self, tenant: str) -> dict[str, _Shard]:
        if self.directory is None:
            return {}
        folder = self.directory / _file_name(tenant)
        if not folder.is_dir():
            return {}
        for leftover in folder.glob("*.tmp"):  # from a save that was killed midway
            leftover.unlink(missing_ok=True)
        shards: dict[str, _Shard] = {}
        for index_path in sorted(folder.glob(f"*{_INDEX_SUFFIX}")):
            collection = _collection_of(index_path)
            if collection is None:
                continue
            shard = self._load_shard(index_path, index_path.with_suffix(_SIDECAR_SUFFIX))
            if shard is not None:
                shards[collection] = shard
        return shards

    def _load_shard(self, index_path: Path, sidecar_path: Path) -> _Shard | None:
        sidecar = _read_sidecar(sidecar_path)
        stored = sidecar.get("dimensions") if sidecar is not None else _stored_dimensions(index_path)
        if stored is None and sidecar is not None:
            stored = _stored_dimensions(index_path)
        if stored is not None and stored != self.dimensions:
            # The embedding model changed: the collection is re-embedded (knowledge/reembed.py) into a new
            # shard; the old file is set aside, never searched with a query of another width.
            aside = index_path.with_name(f"{index_path.name}.{stored}d-{int(time.time())}")
            logger.warning("vector index %s holds %s-d vectors, not %d-d (the embedding model changed); "
                           "moved to %s and re-embedded", index_path, stored, self.dimensions, aside.name)
            os.replace(index_path, aside)
            sidecar_path.unlink(missing_ok=True)
            return None
        index = hnswlib.Index(space=_SPACE, dim=self.dimensions)
        try:
            index.load_index(str(index_path), allow_replace_deleted=True)
        except (RuntimeError, MemoryError) as exc:
            aside = index_path.with_name(f"{index_path.name}.corrupt-{int(time.time())}")
            logger.warning("vector index %s is unreadable (%s); moved to %s, the collection must be "
                           "re-indexed", index_path, exc, aside.name)
            os.replace(index_path, aside)
            return None
        index.set_ef(self.ef_search)
        labels = set(index.get_ids_list())
        if sidecar is not None and sidecar.get("index_file") == _fingerprint(index_path):
            deleted = set(sidecar.get("deleted", ()))
        else:
            logger.warning("vector index %s has no matching sidecar; recovering deleted ids", index_path)
            deleted = {label for label in labels if _is_deleted(index, label)}
        return _Shard(index, live=labels - deleted, maybe_deleted=deleted, dirty=False)


def _file_name(name: str) -> str:
    """A reversible, filesystem-safe encoding of a tenant or collection name (no ``.``, no ``/``)."""
    encoded = "".join(
        char if char in _SAFE_CHARS else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in name
    )
    if len(encoded) > _MAX_FILE_NAME:
        raise InvalidRequest("The tenant or collection name is too long.")
    return encoded


def _collection_of(index_path: Path) -> str | None:
    stem = index_path.name[:-len(_INDEX_SUFFIX)]
    try:
        name = unquote(stem, errors="strict")
        # Only files this module wrote: the encoding must round-trip.
        return name if name and _file_name(name) == stem else None
    except (UnicodeDecodeError, InvalidRequest):
        return None


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _FORMAT else None


def _fingerprint(path: Path) -> dict[str, int]:
    """Identifies one written graph file: ``os.replace`` keeps the inode, size and mtime of the temp file."""
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "inode": status.st_ino}


def _is_deleted(index: Any, label: int) -> bool:
    try:
        index.get_items([label])
    except RuntimeError:
        return True
    return False


def _fsync(path: Path) -> None:
    """Flush a file's data to disk, so a rename never exposes an empty file after a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or filesystem can fsync a directory
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _stored_dimensions(index_path: Path) -> int | None:
    """The vector size recorded in an hnswlib file header (hnswlib does not check it against ``dim``)."""
    try:
        with index_path.open("rb") as file:
            header = file.read(_HEADER.size)
    except OSError:
        return None
    if len(header) < _HEADER.size:
        return None
    _, _, _, _, label_offset, offset_data = _HEADER.unpack(header)
    data_size = label_offset - offset_data
    return data_size // 4 if data_size > 0 and data_size % 4 == 0 else None
