"""OpenAI-compatible API: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models[/{id}]``.

Any OpenAI client (the official SDKs, LangChain, ...) works with ``base_url=<atrium>/v1`` and an Atrium API
key. Requests go through the whole gateway stack (routing, fallback, cache, metering). Responses name the
model that served in ``model`` and in the ``x-atrium-model`` / ``x-atrium-provider`` headers. Errors come
in OpenAI's shape (see ``atrium.http.errors``).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from atrium.errors import InvalidRequest, NotFound
from atrium.gateway.catalogue import Catalogue
from atrium.gateway.ports import CallContext, Usage
from atrium.http.compat.openai_wire import (
    ChatCompletionBody,
    EmbeddingsBody,
    completion,
    completion_chunks,
    embedding_texts,
    embeddings_response,
    new_completion_id,
    shorten,
    supports_dimensions,
    to_chat_request,
)
from atrium.http.compat.streams import (
    CLIENT_CLOSED_REQUEST,
    Answer,
    EventStreamResponse,
    call_context,
    check_kind,
    respond_with_answer,
    start_chat,
    unless_disconnected,
    usage_or_estimate,
)
from atrium.http.deps import GatewayDep, LimitedPrincipalDep, LimitsDep, PrincipalDep
from atrium.http.schemas.errors import OpenAIErrorResponse, error_responses, vendor_errors
from atrium.http.schemas.openai import ChatCompletion, EmbeddingList, ModelCard, ModelList

# Errors in OpenAI's shape; a malformed body is a 400 there, never a 422.
router = APIRouter(prefix="/v1", tags=["openai-compatible"],
                   responses=vendor_errors(OpenAIErrorResponse, 401, 403, 503))
_MODEL_CALL = error_responses(400, 402, 404, 413, 429, 502, 504, model=OpenAIErrorResponse)  # 404: no such model

CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
# Catalogue models have no creation date; OpenAI's clients only need an integer here.
_CREATED = int(time.time())


# Documented, not validated (the hot path): the answers are built by hand.
@router.post("/chat/completions", response_model=None, responses={
    200: {"model": ChatCompletion, "description": "A `chat.completion`; with `stream: true`, `chat.completion.chunk` "
          "Server-Sent Events ending with `data: [DONE]`.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **_MODEL_CALL})
async def chat_completions(body: ChatCompletionBody, request: Request, principal: LimitedPrincipalDep,
                           gateway: GatewayDep, limits: LimitsDep) -> Response:
    context = call_context(principal, request, CHAT_ENDPOINT, cache=body.cache)
    chat_request = to_chat_request(body, context, max_message_chars=limits.max_message_chars)

    def estimate(text: str) -> Usage:
        return usage_or_estimate(None, chat_request, text, gateway.counter)

    if body.stream:
        stream = await unless_disconnected(request.receive, start_chat(gateway, chat_request))
        if stream is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = completion_chunks(stream.events(), model=stream.model, include_usage=include_usage,
                                   estimate=estimate)
        return EventStreamResponse(chunks, stream, headers=stream.headers)

    def render(answer: Answer, usage: Usage) -> dict[str, Any]:
        return completion(answer, usage, completion_id=new_completion_id(), created=int(time.time()))

    async def whole_answer() -> Response:
        return await respond_with_answer(await start_chat(gateway, chat_request), render, estimate)

    response = await unless_disconnected(request.receive, whole_answer())
    return response if response is not None else Response(status_code=CLIENT_CLOSED_REQUEST)


@router.post("/embeddings", response_model=None, responses={200: {"model": EmbeddingList}, **_MODEL_CALL})
async def embeddings(body: EmbeddingsBody, principal: LimitedPrincipalDep, gateway: GatewayDep,
                     limits: LimitsDep) -> JSONResponse:
    texts = embedding_texts(body, max_chars=limits.max_message_chars)
    check_kind(gateway.catalogue, body.model, "embedding")
    context = CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                          endpoint=EMBEDDINGS_ENDPOINT)
    route = gateway.catalogue.route(body.model, org_id=principal.org_id, kind="embedding")
    entry = route.entries[0]
    if body.dimensions is not None and body.dimensions != entry.dimensions \
            and not supports_dimensions(entry.upstream_model):
        raise InvalidRequest(f"Model {body.model!r} does not support 'dimensions'.", code="unsupported_parameter")
    result = await gateway.embed(body.model, texts, context, route=route)
    vectors = result.vectors
    native = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    if body.dimensions is not None and body.dimensions != native:
        if body.dimensions > native:
            raise InvalidRequest(f"dimensions must be at most {native} for model {body.model!r}.",
                                 code="invalid_value")
        vectors = shorten(vectors, body.dimensions)
    payload = embeddings_response(vectors, model=result.model, prompt_tokens=result.prompt_tokens,
                                  encoding_format=body.encoding_format)
    return JSONResponse(payload, headers={"x-atrium-model": result.model, "x-atrium-provider": entry.provider})


def visible_models(catalogue: Catalogue, org_id: str) -> list[dict[str, Any]]:
    """The tenant's models in OpenAI's shape: catalogue models, their aliases, then routes."""
    models: dict[str, dict[str, Any]] = {}

    def add(model_id: str, owned_by: str, **extra: Any) -> None:
        models.setdefault(model_id, {"id": model_id, "object": "model", "created": _CREATED, "owned_by": owned_by,
                                     **extra})

    for entry in catalogue.visible(org_id):
        add(entry.name, entry.provider, kind=entry.kind)
        for alias in entry.aliases:
            add(alias, entry.provider, kind=entry.kind, alias_of=entry.name)
    for name in catalogue.route_names(org_id):
        add(name, "atrium-route", kind="route")
    return list(models.values())


# exclude_unset: a model card keeps exactly its keys (``alias_of`` only on an alias).
@router.get("/models", response_model=ModelList, response_model_exclude_unset=True)
async def list_models(principal: PrincipalDep, gateway: GatewayDep) -> dict[str, Any]:
    return {"object": "list", "data": visible_models(gateway.catalogue, principal.org_id)}


@router.get("/models/{model_id:path}", response_model=ModelCard, response_model_exclude_unset=True,
            responses=error_responses(404, model=OpenAIErrorResponse))
async def get_model(model_id: str, principal: PrincipalDep, gateway: GatewayDep) -> dict[str, Any]:
    for model in visible_models(gateway.catalogue, principal.org_id):
        if model["id"] == model_id:
            return model
    raise NotFound(f"No model or route named {model_id!r}; GET /v1/models lists what you may use.",
                   code="model_not_found")
