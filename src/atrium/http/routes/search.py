"""``POST /api/v1/search/semantic``: hybrid, vector or keyword search over the collections the caller may
read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.errors import InvalidRequest, PayloadTooLarge
from atrium.http.deps import KnowledgeDep, LimitedPrincipalDep, SettingsDep
from atrium.http.schemas.errors import AUTHENTICATED, LIMITED, error_responses
from atrium.http.schemas.search import SearchHit, SearchResponse
from atrium.knowledge.filters import SearchFilters
from atrium.knowledge.parsing import FILE_TYPES

FileType = Literal["pdf", "html", "md", "txt", "docx", "csv"]

# 404: no such collection (or none the caller may read).
router = APIRouter(prefix="/api/v1/search", tags=["search"],
                   responses={**AUTHENTICATED, **LIMITED, **error_responses(404)})


class SearchFiltersBody(BaseModel):
    """Narrow a search to some documents (inside the collections the caller may read)."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, min_length=1, max_length=1000,
                               description="A document's source, exactly; ending in `*`: a prefix of it.")
    type: list[FileType] | None = Field(None, min_length=1, max_length=len(FILE_TYPES),
                                        description="Document types, any of them.")
    created_after: datetime | None = Field(None, description="Documents stored at or after this ISO 8601 date "
                                                             "or time (UTC when no offset is given).")
    created_before: datetime | None = Field(None, description="Documents stored before this ISO 8601 date or "
                                                              "time (UTC when no offset is given).")

    @model_validator(mode="after")
    def _ordered(self) -> SearchFiltersBody:
        if self.created_after is not None and self.created_before is not None \
                and _utc(self.created_after) >= _utc(self.created_before):
            raise ValueError("created_after must be before created_before")
        return self

    def to_filters(self) -> SearchFilters:
        return SearchFilters.of(self.source, self.type, self.created_after, self.created_before)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "refund policy", "limit": 5}]})
    query: str = Field(min_length=1)
    limit: int = Field(10, ge=1)
    collection: str | None = Field(None, min_length=1, max_length=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    filters: SearchFiltersBody | None = None
    rerank: bool | None = Field(None, description=(
        "Re-order the mode's best candidates with the reranking model (`knowledge.rerank`). Omitted: as "
        "`knowledge.rerank.by_default` says when a reranking model is loaded, else not. `true` without a "
        "loaded model: 422 `rerank_unavailable`."))


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
                                           collection=body.collection,
                                           filters=body.filters.to_filters() if body.filters else None,
                                           rerank=body.rerank)
    answer = SearchResponse(mode=body.mode, reranked=knowledge.reranks(body.rerank),
                            results=[SearchHit.of(hit, body.query) for hit in hits],
                            reindexing=await knowledge.reindexing_readable(principal, body.collection))
    return Response(answer.model_dump_json(), media_type="application/json")
