"""One-shot queries: ``POST /api/v1/query`` stores a question and its answer; ``GET`` returns the record.

``POST`` also takes the body the first front ends were written against, ``{"query", "model", "user_id"?}``,
and every answer carries their ``query_id`` and ``response`` beside today's fields. ``user_id`` names who
asks, and may only name the caller: Atrium has no delegation grant, so a caller acting for another user
would read that user's private collections and own the record in their name; anything else is a 403
``user_mismatch``. A service that asks for its end users gives each of them a credential instead."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.accounts.principal import Principal
from atrium.errors import Forbidden
from atrium.gateway.catalogue import Catalogue
from atrium.http.compat.streams import check_kind
from atrium.http.deps import GatewayDep, LimitedPrincipalDep, PrincipalDep, QueriesDep, ResourceId, SettingsDep
from atrium.http.routes.chat import checked_message
from atrium.http.schemas.chat import QueryRecord as QueryRecordView
from atrium.http.schemas.errors import AUTHENTICATED, LIMITED, error_responses
from atrium.knowledge.service import check_collection

router = APIRouter(prefix="/api/v1/query", tags=["query"], responses=AUTHENTICATED)


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"question": "Are gift cards refunded?"}, {"query": "Are gift cards refunded?", "model": "fake"}]})
    question: str | None = Field(None, min_length=1, description="The question (or `query`: one of the two).")
    query: str | None = Field(None, min_length=1, description="The first front ends' name for `question`.")
    model: str | None = Field(None, min_length=1, max_length=200,
                              description="A chat model or route of `GET /v1/models`; default: the question-"
                                          "answering route.")
    user_id: str | None = Field(None, min_length=1, max_length=64,
                                description="Who asks: only the caller's own user id is accepted (403 "
                                            "`user_mismatch` otherwise).")
    collection: str | None = Field(None, min_length=1, max_length=100)
    wait: bool = True

    @model_validator(mode="after")
    def _one_question(self) -> QueryBody:
        if (self.question is None) == (self.query is None):
            raise ValueError("send the question as `question` or as `query` (one of the two)")
        return self

    @property
    def text(self) -> str:
        return self.question if self.question is not None else self.query or ""


def check_acting_user(principal: Principal, user_id: str | None) -> None:
    """``user_id`` may only name the caller itself (see the module docstring)."""
    if user_id is not None and user_id != principal.user_id:
        raise Forbidden("user_id: a query can only be asked as the calling user; send it with that user's "
                        "own credential.", code="user_mismatch")


def check_model(catalogue: Catalogue, principal: Principal, model: str | None) -> str:
    """The model or route named (404 unknown, 403 not allowed to this tenant, 400 not a chat model)."""
    if model is None:
        return ""
    check_kind(catalogue, model, "chat")
    catalogue.route(model, org_id=principal.org_id, kind="chat")
    return model


@router.post("", response_model=None, status_code=201, responses={
    201: {"model": QueryRecordView, "description": "Answered (or failed: see `status` and `error`)."},
    202: {"model": QueryRecordView, "description": "Still pending: poll `GET /api/v1/query/{id}`."},
    **LIMITED, **error_responses(404)})  # 404: no such collection (or none the caller may read), or model
async def submit(body: QueryBody, principal: LimitedPrincipalDep, queries: QueriesDep, gateway: GatewayDep,
                 settings: SettingsDep) -> JSONResponse:
    """Answer the question and return the stored record (201). With ``wait: false``, or when the answer
    takes longer than the request timeout, return the pending record at once (202) to poll with GET."""
    check_acting_user(principal, body.user_id)
    question = checked_message(body.text, settings.limits.max_message_chars)
    model = check_model(gateway.catalogue, principal, body.model)
    collections = [check_collection(body.collection)] if body.collection else None
    record_id, task = await queries.submit(principal, question, collections, model=model)
    if body.wait:
        # shield: the run keeps going (and stores its answer) even if this request is cancelled.
        await asyncio.wait({asyncio.shield(task)}, timeout=settings.chat.request_timeout_s)
    record = await queries.get(principal, record_id)
    return JSONResponse(QueryRecordView.of(record).model_dump(mode="json"),
                        status_code=201 if record.status != "pending" else 202)


@router.get("/{record_id}", response_model=QueryRecordView, responses=error_responses(404))
async def get(record_id: ResourceId, principal: PrincipalDep, queries: QueriesDep) -> QueryRecordView:
    return QueryRecordView.of(await queries.get(principal, record_id))
