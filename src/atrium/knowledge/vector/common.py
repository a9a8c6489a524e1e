"""Argument checks and result merging shared by the vector index adapters."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from atrium.errors import InvalidRequest
from atrium.gateway.ports import Vectors
from atrium.knowledge.ports import VectorHit

Ids = npt.NDArray[np.int64]


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"The {kind} name must be a non-empty string.")


def check_batch(ids: Sequence[int], vectors: Vectors, dimensions: int) -> tuple[Ids, Vectors]:
    """Validate an ``add`` batch; of repeated ids the last one wins. Returns ``(ids, float32 vectors)``."""
    id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1 and len(id_array) == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape != (len(id_array), dimensions):
        raise InvalidRequest(f"Expected vectors of shape ({len(id_array)}, {dimensions}), "
                             f"got {tuple(matrix.shape)}.")
    if len(id_array) and int(id_array.min()) < 0:
        raise InvalidRequest("Vector ids must be non-negative.")
    if not np.isfinite(matrix).all():
        raise InvalidRequest("Vectors must be finite.")
    if len(np.unique(id_array)) != len(id_array):
        _, last_in_reversed = np.unique(id_array[::-1], return_index=True)
        keep = np.sort(len(id_array) - 1 - last_in_reversed)
        id_array, matrix = id_array[keep], matrix[keep]
    return id_array, np.ascontiguousarray(matrix)


def check_ids(ids: Sequence[int]) -> list[int]:
    return [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]


def check_query(vector: Vectors, dimensions: int) -> Vectors:
    """A query as a float32 vector of shape ``(dimensions,)`` (``(1, dimensions)`` is accepted)."""
    query = np.asarray(vector, dtype=np.float32)
    if query.ndim == 2 and query.shape[0] == 1:
        query = query[0]
    if query.shape != (dimensions,):
        raise InvalidRequest(f"Expected a query vector of {dimensions} dimensions, got shape {query.shape}.")
    if not np.isfinite(query).all():
        raise InvalidRequest("The query vector must be finite.")
    return query


def normalise_rows(matrix: Vectors) -> Vectors:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return (matrix / np.clip(norms, 1e-30, None)).astype(np.float32, copy=False)


def best_hits(hits: Iterable[tuple[int, float]], limit: int) -> list[VectorHit]:
    """The ``limit`` best ``(id, score)`` pairs, highest score first (ties: lower id first)."""
    best = heapq.nsmallest(limit, hits, key=lambda hit: (-hit[1], hit[0]))
    return [VectorHit(id=int(hit_id), score=float(score)) for hit_id, score in best]
