"""``POST /api/v1/search/semantic``: hybrid, vector or keyword search over the collections the caller may
read."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.errors import InvalidRequest, PayloadTooLarge
from atrium.http.deps import KnowledgeDep, LimitedPrincipalDep, SettingsDep
from atrium.http.schemas.errors import AUTHENTICATED, LIMITED, error_responses
from atrium.http.schemas.search import SearchHit, SearchResponse

# 404: no such collection (or none the caller may read).
router = APIRouter(prefix="/api/v1/search", tags=["search"],
                   responses={**AUTHENTICATED, **LIMITED, **error_responses(404)})


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "refund policy", "limit": 5}]})
    query: str = Field(min_length=1)
    limit: int = Field(10, ge=1)
    collection: str | None = Field(None, min_length=1, max_length=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"


# Documented, not declared (a hot path): the answer is built once and pydantic writes its JSON, with no
# second validation and no jsonable_encoder walk.
@router.post("/semantic", response_model=None, responses={200: {"model": SearchResponse}})
async def semantic(body: SearchBody, principal: LimitedPrincipalDep, knowledge: KnowledgeDep,
                   settings: SettingsDep) -> Response:
    limits = settings.limits
    if len(body.query) > limits.max_message_chars:
        raise PayloadTooLarge(f"query is longer than {limits.max_message_chars} characters.")
    if body.limit > limits.max_search_limit:
        raise InvalidRequest(f"limit must be at most {limits.max_search_limit}.")
    hits = await knowledge.search_readable(principal, body.query, mode=body.mode, limit=body.limit,
                                           collection=body.collection)
    answer = SearchResponse(mode=body.mode, results=[SearchHit.of(hit) for hit in hits],
                            reindexing=await knowledge.reindexing_readable(principal, body.collection))
    return Response(answer.model_dump_json(), media_type="application/json")
