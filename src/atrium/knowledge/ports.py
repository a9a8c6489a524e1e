"""Knowledge ports: VectorIndex and KeywordSearch (the Embedder port is the gateway's: ``gateway/ports.py``).

Vectors are float32, L2-normalised, shape ``(n, dimensions)``; scores are cosine similarities (higher is
better). The tenant (organisation id) is a required argument of every index method: one tenant's vectors are
never searched for another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession

from atrium.gateway.ports import Vectors

if TYPE_CHECKING:
    from atrium.knowledge.filters import SearchFilters


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: int
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """An approximate nearest-neighbour index of chunk vectors, keyed by chunk id, per tenant and
    collection. The database holds the truth (every chunk keeps its vector); ``KnowledgeService.reconcile``
    makes the index match it through ``ids``/``add``/``delete`` after a crash."""

    dimensions: int

    async def add(self, tenant: str, collection: str, ids: Sequence[int], vectors: Vectors) -> None: ...

    async def delete(self, tenant: str, collection: str, ids: Sequence[int]) -> None: ...

    async def search(self, tenant: str, collections: Sequence[str] | None, vector: Vectors,
                     limit: int) -> list[VectorHit]:
        """Best ``limit`` hits over the given collections (``None``: all of the tenant's)."""
        ...

    async def ids(self, tenant: str, collection: str) -> set[int]: ...

    async def collections(self, tenant: str) -> list[str]:
        """The tenant's collections that hold at least one vector."""
        ...

    async def save(self) -> None:
        """Persist to disk (no-op for in-memory adapters)."""
        ...


class KeywordSearch(Protocol):
    """Ranks a tenant's chunks by keyword relevance; returns ``(chunk_id, score)``, best first (higher is
    better). Backends: ``knowledge/keyword.py``."""

    async def search(self, session: AsyncSession, tenant: str, collections: Sequence[str] | None,
                     query: str, limit: int, filters: SearchFilters | None = None) -> list[tuple[int, float]]:
        """``filters``: only chunks of the documents they match (``knowledge/filters.py``)."""
        ...
