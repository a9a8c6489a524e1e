"""``POST /api/v1/search/semantic``: hybrid, vector or keyword search over the collections the caller may
read."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from atrium.errors import InvalidRequest, PayloadTooLarge
from atrium.http.deps import LimitedPrincipalDep, ServicesDep
from atrium.http.schemas.errors import AUTHENTICATED, LIMITED, error_responses
from atrium.http.schemas.search import SearchResponse
from atrium.knowledge.service import check_collection

# 404: no such collection (or none the caller may read).
router = APIRouter(prefix="/api/v1/search", tags=["search"],
                   responses={**AUTHENTICATED, **LIMITED, **error_responses(404)})


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "refund policy", "limit": 5}]})
    query: str = Field(min_length=1)
    limit: int = Field(10, ge=1)
    collection: str | None = Field(None, min_length=1, max_length=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"


# Documented, not validated (a hot path): the route returns the dict as it builds it.
@router.post("/semantic", response_model=None, responses={200: {"model": SearchResponse}})
async def semantic(body: SearchBody, principal: LimitedPrincipalDep, services: ServicesDep) -> dict[str, object]:
    limits = services.settings.limits
    if len(body.query) > limits.max_message_chars:
        raise PayloadTooLarge(f"query is longer than {limits.max_message_chars} characters.")
    if body.limit > limits.max_search_limit:
        raise InvalidRequest(f"limit must be at most {limits.max_search_limit}.")
    names = await services.knowledge.directory.searchable(
        principal, [check_collection(body.collection)] if body.collection else None)
    hits = await services.knowledge.search(principal.org_id, body.query, mode=body.mode, limit=body.limit,
                                           collections=names)
    return {
        "mode": body.mode,
        "results": [
            {"chunk_id": hit.chunk.id, "document_id": hit.chunk.document_id, "collection": hit.chunk.collection,
             "source": hit.chunk.source, "title": hit.chunk.title, "heading": hit.chunk.heading,
             "text": hit.chunk.text, "score": hit.score}
            for hit in hits
        ],
    }
