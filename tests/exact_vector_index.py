"""Brute-force vector index in memory (numpy): exact results, the reference the VectorIndex contract and the
search benchmark measure the real adapters against."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np

from atrium.gateway.ports import Vectors
from atrium.knowledge.ports import VectorHit
from atrium.knowledge.vector.common import (
    best_hits,
    check_batch,
    check_ids,
    check_name,
    check_query,
    normalise_rows,
)

_INITIAL_CAPACITY = 256


@dataclass(eq=False)
class _Collection:
    """Rows ``[0, size)`` of ``vectors`` are live; ``rows`` maps an id to its row."""

    dimensions: int
    ids: np.ndarray = field(init=False)
    vectors: np.ndarray = field(init=False)
    rows: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = np.empty(_INITIAL_CAPACITY, dtype=np.int64)
        self.vectors = np.empty((_INITIAL_CAPACITY, self.dimensions), dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self.rows)

    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        new = [i for i in ids.tolist() if i not in self.rows]
        needed = self.size + len(new)
        if needed > len(self.ids):
            capacity = max(needed, 2 * len(self.ids))
            self.ids = np.resize(self.ids, capacity)
            grown = np.empty((capacity, self.dimensions), dtype=np.float32)
            grown[:self.size] = self.vectors[:self.size]
            self.vectors = grown
        for item in new:
            row = self.size
            self.rows[item] = row
            self.ids[row] = item
        target = np.fromiter((self.rows[i] for i in ids.tolist()), dtype=np.int64, count=len(ids))
        self.vectors[target] = vectors

    def delete(self, ids: list[int]) -> None:
        for item in ids:
            row = self.rows.pop(item, None)
            if row is None:
                continue
            last = self.size  # the size after the pop: the index of the last live row
            if row != last:
                moved = int(self.ids[last])
                self.ids[row] = moved
                self.vectors[row] = self.vectors[last]
                self.rows[moved] = row

    def search(self, query: Vectors, limit: int) -> list[tuple[int, float]]:
        if not self.size:
            return []
        scores = self.vectors[:self.size] @ query
        k = min(limit, self.size)
        top = np.argpartition(-scores, k - 1)[:k] if k < self.size else np.arange(self.size)
        return list(zip(self.ids[top].tolist(), scores[top].tolist(), strict=True))


class ExactVectorIndex:
    """VectorIndex adapter that scans every vector of the searched collections (numpy matrix product).

    Exact and simple, linear in the collection size (about 7 ms per query at 100k x 384 on one core):
    the reference the HNSW index is measured against, and a second adapter for the contract suite. In
    memory only (``save`` does nothing). Vectors are normalised on the way in, so scores are cosines.
    """

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._collections: dict[str, dict[str, _Collection]] = {}
        self._lock = threading.Lock()

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
        query = normalise_rows(check_query(vector, self.dimensions))
        if limit <= 0:
            return []
        return await anyio.to_thread.run_sync(self._search_sync, tenant, collections, query, limit)

    async def ids(self, tenant: str, collection: str) -> set[int]:
        return await anyio.to_thread.run_sync(self._ids_sync, tenant, collection)

    async def collections(self, tenant: str) -> list[str]:
        """The tenant's collections that hold at least one vector."""
        return await anyio.to_thread.run_sync(self._collections_sync, tenant)

    async def save(self) -> None:
        """Nothing to persist: this index lives in memory."""

    def _add_sync(self, tenant: str, collection: str, raw_ids: Sequence[int], raw_vectors: Vectors) -> None:
        ids, vectors = check_batch(raw_ids, raw_vectors, self.dimensions)
        if not len(ids):
            return
        vectors = normalise_rows(vectors)
        with self._lock:
            shards = self._collections.setdefault(tenant, {})
            shards.setdefault(collection, _Collection(self.dimensions)).add(ids, vectors)

    def _ids_sync(self, tenant: str, collection: str) -> set[int]:
        with self._lock:
            found = self._collections.get(tenant, {}).get(collection)
            return set(found.rows) if found else set()

    def _collections_sync(self, tenant: str) -> list[str]:
        with self._lock:
            return sorted(name for name, c in self._collections.get(tenant, {}).items() if c.size)

    def _delete_sync(self, tenant: str, collection: str, ids: list[int]) -> None:
        with self._lock:
            found = self._collections.get(tenant, {}).get(collection)
            if found is not None:
                found.delete(ids)

    def _search_sync(self, tenant: str, collections: Sequence[str] | None, query: Vectors,
                     limit: int) -> list[VectorHit]:
        with self._lock:
            shards = self._collections.get(tenant, {})
            names = list(shards) if collections is None else [name for name in collections if name in shards]
            hits = [hit for name in dict.fromkeys(names) for hit in shards[name].search(query, limit)]
        return best_hits(hits, limit)
