"""``POST /api/v1/search/semantic``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from atrium.http.schemas.common import Passage, View
from atrium.knowledge.snippets import snippet

if TYPE_CHECKING:
    from atrium.knowledge.service import SearchHit as Hit


class SearchHit(Passage):
    text: str = Field(description="The chunk's text, starting with its heading path line, if any.")
    score: float = Field(description="The mode's relevance score: higher is better, comparable within one "
                                     "answer only.")
    snippet: str = Field(description="A short window of `text` (at most 300 characters, at word boundaries) "
                                     "around its best match with the query; its start when nothing matches.")

    @classmethod
    def of(cls, hit: Hit, query: str) -> SearchHit:
        chunk = hit.chunk
        shown = snippet(chunk.text, query)
        return cls(chunk_id=chunk.id, document_id=chunk.document_id, collection=chunk.collection,
                   source=chunk.source, title=chunk.title, heading=chunk.heading, page=chunk.page, text=chunk.text,
                   score=hit.score, snippet=shown.text, highlights=list(shown.highlights))


class SearchResponse(View):
    mode: Literal["hybrid", "vector", "keyword"]
    reranked: bool = Field(False, description="Whether the reranking model re-ordered the results.")
    results: list[SearchHit]
    reindexing: list[str] = Field(default_factory=list, description=(
        "Searched collections being re-embedded after a change of embedding model: until their job ends, "
        "the vector ranking holds only their chunks re-embedded so far (the keyword ranking holds all)."))
