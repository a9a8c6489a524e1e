"""``POST /api/v1/search/semantic``."""

from __future__ import annotations

from typing import Literal

from atrium.http.schemas.common import View


class SearchHit(View):
    chunk_id: int
    document_id: str
    collection: str
    source: str
    title: str
    heading: str
    text: str
    score: float


class SearchResponse(View):
    mode: Literal["hybrid", "vector", "keyword"]
    results: list[SearchHit]
