"""Anthropic-compatible API: ``POST /v1/messages``.

Any Anthropic client (the official SDKs, ...) works with ``base_url=<atrium>`` and an Atrium API key sent
as ``x-api-key`` (the ``anthropic-version`` header is accepted whatever its value). The request goes
through the whole gateway stack, so any catalogue model answers, whatever its provider's format. Responses
name the model that served in ``model`` and in ``x-atrium-model`` / ``x-atrium-provider``; errors come in
Anthropic's shape (see ``atrium.http.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from atrium.gateway.ports import Usage
from atrium.http.compat.anthropic_wire import (
    MessagesBody,
    message,
    message_events,
    new_message_id,
    to_chat_request,
)
from atrium.http.compat.streams import (
    CLIENT_CLOSED_REQUEST,
    Answer,
    EventStreamResponse,
    call_context,
    respond_with_answer,
    start_chat,
    unless_disconnected,
    usage_or_estimate,
)
from atrium.http.deps import GatewayDep, LimitedPrincipalDep, LimitsDep
from atrium.http.schemas.anthropic import AnthropicMessage
from atrium.http.schemas.errors import AnthropicErrorResponse, vendor_errors

# Errors in Anthropic's shape; a malformed body is a 400 there, never a 422.
router = APIRouter(prefix="/v1", tags=["anthropic-compatible"],
                   responses=vendor_errors(AnthropicErrorResponse, 400, 401, 402, 403, 404, 413, 429, 502, 503,
                                           504))

MESSAGES_ENDPOINT = "/v1/messages"


# Documented, not validated (the hot path): the answers are built by hand.
@router.post("/messages", response_model=None, responses={
    200: {"model": AnthropicMessage, "description": "A `message`; with `stream: true`, Anthropic's Server-Sent "
          "Events (`message_start`, `content_block_*`, `message_delta`, `message_stop`).",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def messages(body: MessagesBody, request: Request, principal: LimitedPrincipalDep,
                   gateway: GatewayDep, limits: LimitsDep) -> Response:
    context = call_context(principal, request, MESSAGES_ENDPOINT, cache=body.cache)
    chat_request = to_chat_request(body, context, max_message_chars=limits.max_message_chars)
    stream = await unless_disconnected(request.receive, start_chat(gateway, chat_request))
    if stream is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    def estimate(text: str) -> Usage:
        return usage_or_estimate(None, chat_request, text, gateway.counter)

    if body.stream:
        events = message_events(stream.events(), model=stream.model, estimate=estimate)
        return EventStreamResponse(events, stream, headers=stream.headers)

    def render(answer: Answer, usage: Usage) -> dict[str, Any]:
        return message(answer, usage, message_id=new_message_id())

    response = await unless_disconnected(request.receive, respond_with_answer(stream, render, estimate))
    return response if response is not None else Response(status_code=CLIENT_CLOSED_REQUEST)
