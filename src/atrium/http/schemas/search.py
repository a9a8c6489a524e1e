"""``POST /api/v1/search/semantic``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from atrium.http.schemas.common import Passage, View

if TYPE_CHECKING:
    from atrium.knowledge.service import SearchHit as Hit


class SearchHit(Passage):
    text: str = Field(description="The chunk's text, starting with its heading path line, if any.")
    score: float = Field(description="The mode's relevance score: higher is better, comparable within one "
                                     "answer only.")

    @classmethod
    def of(cls, hit: Hit) -> SearchHit:
        chunk = hit.chunk
        return cls(chunk_id=chunk.id, document_id=chunk.document_id, collection=chunk.collection,
                   source=chunk.source, title=chunk.title, heading=chunk.heading, text=chunk.text, score=hit.score)


class SearchResponse(View):
    mode: Literal["hybrid", "vector", "keyword"]
    results: list[SearchHit]
    reindexing: list[str] = Field(default_factory=list, description=(
        "Searched collections being re-embedded after a change of embedding model: until their job ends, "
        "the vector ranking holds only their chunks re-embedded so far (the keyword ranking holds all)."))
