"""``POST /api/v1/search/semantic``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from atrium.http.schemas.common import View

if TYPE_CHECKING:
    from atrium.knowledge.service import SearchHit as Hit


class SearchHit(View):
    chunk_id: int
    document_id: str
    collection: str
    source: str
    title: str
    heading: str
    text: str
    score: float

    @classmethod
    def of(cls, hit: Hit) -> SearchHit:
        chunk = hit.chunk
        return cls(chunk_id=chunk.id, document_id=chunk.document_id, collection=chunk.collection,
                   source=chunk.source, title=chunk.title, heading=chunk.heading, text=chunk.text, score=hit.score)


class SearchResponse(View):
    mode: Literal["hybrid", "vector", "keyword"]
    results: list[SearchHit]
