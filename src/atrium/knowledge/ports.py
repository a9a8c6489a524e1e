"""Knowledge ports: VectorIndex and KeywordSearch (the Embedder port is the gateway's: ``gateway/ports.py``).

Vectors are float32, L2-normalised, shape ``(n, dimensions)``; scores are cosine similarities (higher is
better). The tenant (organisation id) is a required argument of every index method: one tenant's vectors are
never searched for another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession

from atrium.gateway.ports import Vectors


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: int
    score: float


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Metadata filters of a search (applied by ``knowledge/filters.py``). ``source``: a document's source,
    or a prefix of it when ``source_prefix``; ``types``: document types;
    ``created_after`` (inclusive) / ``created_before`` (exclusive): when the document was stored."""

    source: str | None = None
    source_prefix: bool = False
    types: tuple[str, ...] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    @classmethod
    def of(cls, source: str | None = None, types: Sequence[str] | None = None,
           created_after: datetime | None = None, created_before: datetime | None = None) -> SearchFilters:
        """From a request's fields: a source ending in ``*`` is a prefix."""
        prefix = source is not None and source.endswith("*")
        return cls(source=source[:-1] if source is not None and prefix else source, source_prefix=prefix,
                   types=tuple(types) if types is not None else None,
                   created_after=_utc(created_after), created_before=_utc(created_before))

    @property
    def empty(self) -> bool:
        return self.source is None and self.types is None and self.created_after is None \
            and self.created_before is None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
