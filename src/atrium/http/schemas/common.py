"""Pieces the response models share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Timestamp = Annotated[str, Field(description="ISO 8601 date and time.")]


class View(BaseModel):
    """Base of every response model. Extra keys are kept (``extra="allow"``): a response model documents
    an answer, it never drops a key a route returns."""

    model_config = ConfigDict(extra="allow")


class TokenUsage(View):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Passage(View):
    """Where a passage of the knowledge base comes from."""

    chunk_id: int = Field(description="The chunk's id (stable until its document is re-ingested).")
    document_id: str = Field(description="The document the chunk belongs to.")
    collection: str = Field(description="The document's collection.")
    source: str = Field(description="The document's source: its file name or URL.")
    title: str = Field(description="The document's title.")
    heading: str = Field(description="The heading path above the chunk (`A > B`), empty at the top level.")
    page: int | None = Field(None, description="The page the chunk comes from (PDF); null when the document "
                                               "has no pages.")
    highlights: list[tuple[int, int]] = Field(
        default_factory=list, description="Where the query's words (light stemming: `index` matches "
                                          "`indexes`) are in `snippet`: `[start, end)` character offsets.")
