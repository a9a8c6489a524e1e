"""One-shot queries: ``POST /api/v1/query`` stores a question and its answer; ``GET`` returns the record."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from atrium.http.deps import LimitedPrincipalDep, PrincipalDep, QueriesDep, ResourceId, SettingsDep
from atrium.http.routes.chat import checked_message
from atrium.http.schemas.chat import QueryRecord as QueryRecordView
from atrium.http.schemas.errors import AUTHENTICATED, LIMITED, error_responses
from atrium.knowledge.service import check_collection

router = APIRouter(prefix="/api/v1/query", tags=["query"], responses=AUTHENTICATED)


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"question": "Are gift cards refunded?"}]})
    question: str = Field(min_length=1)
    collection: str | None = Field(None, min_length=1, max_length=100)
    wait: bool = True


@router.post("", response_model=None, status_code=201, responses={
    201: {"model": QueryRecordView, "description": "Answered (or failed: see `status` and `error`)."},
    202: {"model": QueryRecordView, "description": "Still pending: poll `GET /api/v1/query/{id}`."},
    **LIMITED, **error_responses(404)})  # 404: no such collection (or none the caller may read)
async def submit(body: QueryBody, principal: LimitedPrincipalDep, queries: QueriesDep,
                 settings: SettingsDep) -> JSONResponse:
    """Answer the question and return the stored record (201). With ``wait: false``, or when the answer
    takes longer than the request timeout, return the pending record at once (202) to poll with GET."""
    question = checked_message(body.question, settings.limits.max_message_chars)
    collections = [check_collection(body.collection)] if body.collection else None
    record_id, task = await queries.submit(principal, question, collections)
    if body.wait:
        # shield: the run keeps going (and stores its answer) even if this request is cancelled.
        await asyncio.wait({asyncio.shield(task)}, timeout=settings.chat.request_timeout_s)
    record = await queries.get(principal, record_id)
    return JSONResponse(QueryRecordView.of(record).model_dump(mode="json"),
                        status_code=201 if record.status != "pending" else 202)


@router.get("/{record_id}", response_model=QueryRecordView, responses=error_responses(404))
async def get(record_id: ResourceId, principal: PrincipalDep, queries: QueriesDep) -> QueryRecordView:
    return QueryRecordView.of(await queries.get(principal, record_id))
