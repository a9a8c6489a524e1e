"""The assistant's model calls: one ``ChatRequest`` down the gateway's ChatModel, read to its end.

Every call of the graph goes through ``AssistantDeps.model`` (the gateway stack: guard, budget, metering,
cache, router...), never around it. A call that streams to the client passes each token through the
output stage's sanitiser first; tool calls the model makes are assembled from their deltas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from atrium.errors import GatewayError, error_for
from atrium.gateway.ports import (
    ChatModel,
    ChatRequest,
    Done,
    ErrorEvent,
    Token,
    ToolCall,
    ToolCallDelta,
)
from atrium.gateway.streams import ChatStream
from atrium.guard.sanitize import MarkdownSanitizer


@dataclass(slots=True)
class Reply:
    """A whole model reply: its text (sanitised when a sanitiser was given), tool calls and model name."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    model: str | None = None


async def call_model(model: ChatModel, request: ChatRequest, *, on_text: Callable[[str], None] | None = None,
                     sanitizer: MarkdownSanitizer | None = None) -> Reply:
    """Run ``request`` and return the reply; ``on_text`` receives each (sanitised) piece as it streams.
    A failed call raises the ``AppError`` its code maps to (a partial reply is never passed off as whole)."""
    reply, parts = Reply(), []
    calls: dict[int, list[str]] = {}

    def emit(text: str) -> None:
        if text:
            parts.append(text)
            if on_text is not None:
                on_text(text)

    async with ChatStream(model.stream(request)) as events:
        async for event in events:
            match event:
                case Token(text=text):
                    emit(sanitizer.feed(text) if sanitizer is not None else text)
                case ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments):
                    call = calls.setdefault(index, ["", "", ""])
                    call[0] = call_id or call[0]
                    call[1] = name or call[1]
                    call[2] += arguments
                case Done(model=name):
                    reply.model = name
                    break
                case ErrorEvent():
                    raise error_for(event.code, event.message, retryable=event.retryable,
                                    retry_after=event.retry_after)
        else:
            raise GatewayError("The model ended its stream without a final event.", code="upstream_error")
    if sanitizer is not None:
        emit(sanitizer.finish())
    reply.text = "".join(parts)
    reply.tool_calls = [ToolCall(id=call_id or f"call_{index}", name=name, arguments=arguments)
                        for index, (call_id, name, arguments) in sorted(calls.items()) if name]
    return reply


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object a structured-output reply holds, or None. Strict about the value (an object),
    lenient about what small models wrap it in: a Markdown fence, or a sentence before or after it."""
    text = _FENCE.sub("", text.strip())
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
