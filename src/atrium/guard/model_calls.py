"""``GuardedChatModel``: the guard pipeline's stages on a model call, as the outermost gateway wrapper
(built by ``GuardPipeline.wrap``, see ``atrium.guard.pipeline``).

*Input* stage, before the call, on the request's messages (text content, text parts, tool-call arguments):

1. **prompt injection**: user messages under the tenant's *input* policy, tool results (retrieved
   content) under its *context* policy (``flag`` / ``strip`` / ``refuse``);
2. **PII and secrets** (``atrium.guard.pii``), when the call could reach a model that is not local
   (some candidate of the request's route has ``local: false``; a model on this host may see personal
   data): ``redact`` replaces each value with a placeholder and restores the placeholders in the answer,
   ``route_local`` serves the call with local models only (``CallContext.local_only``, which the router
   enforces; the request then carries its new route, ``ChatRequest.route``), ``block`` refuses it naming
   the types found, ``allow`` lets it through;
3. **moderation**: the local blocklist, then the moderation endpoint if one is configured, which gets the
   text with personal data replaced by placeholders (unless the policy is ``allow``): it is a third party.

A use case that already ran a stage on the content says so in ``ChatRequest.guarded``, and the stage is
not applied again: a grounded prompt is assembled by Atrium from a question (its *input* stage: injection,
moderation) and retrieved sources (its *context* stage: injection), so only the PII policy applies to
the assembled prompt (scanning it would judge the sources as user input, and moderate the tenant's own
documents).

A refusal ends the stream with ``ErrorEvent(code="content_blocked")`` (HTTP 400 at the edge) before any
model is called; an unreachable moderation endpoint under ``fail_closed`` with
``code="moderation_unavailable"`` (502). Being outermost, the budget, the cache, the metering and every
provider see only the redacted prompt: personal data is neither sent nor cached nor counted, and a cached
answer is restored with the current call's values (the *output* stage's restore; placeholders cut across
two streamed chunks are held back until complete, ``StreamRestorer``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Literal

from atrium.errors import ContentBlocked
from atrium.gateway.catalogue import Route
from atrium.gateway.ports import (
    ChatEvent,
    ChatMessage,
    ChatModel,
    ChatRequest,
    Done,
    ErrorEvent,
    Token,
    ToolCallDelta,
    Usage,
    carried_route,
)
from atrium.gateway.wrapping import ChatModelWrapper
from atrium.guard.moderation import ModerationUnavailable
from atrium.guard.pii import Redaction, StreamRestorer
from atrium.guard.policy import Guard, redact_offloaded
from atrium.guard.settings import GuardPolicySettings


class GuardedChatModel(ChatModelWrapper):
    """See the module docstring. ``route`` resolves a request's candidates (to know whether the call
    stays on this host) when the request carries no route yet."""

    def __init__(self, inner: ChatModel, guard: Guard, *, route: Callable[[ChatRequest], Route]) -> None:
        super().__init__(inner)
        self._guard = guard
        self._route = route

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        try:
            request, redaction = await self._check(request)
        except (ContentBlocked, ModerationUnavailable) as exc:
            yield ErrorEvent(code=exc.code, message=exc.message, retryable=isinstance(exc, ModerationUnavailable))
            return
        async with self._open(request) as events:
            if redaction is None:
                async for event in events:
                    yield event
                return
            async for event in _restored(events, redaction):
                yield event

    async def _check(self, request: ChatRequest) -> tuple[ChatRequest, Redaction | None]:
        context = request.context
        policy = await self._guard.policy(context.org_id)
        if not policy.enabled:
            return request, None
        # None: the router answers the error itself; meanwhile assume the worst (not local).
        request, route = carried_route(request, self._route)
        # The stages the use case already ran on this content (a grounded prompt: its question and its
        # sources) are not applied again; the PII policy always applies to the assembled prompt.
        checked = request.guarded
        slots = [_texts(message) for message in request.messages]
        flat = given = [text for texts in slots for text in texts]
        if "input" not in checked or "context" not in checked:
            slots = [self._injection(message.role, texts, policy, context.org_id, checked)
                     for message, texts in zip(request.messages, slots, strict=True)]
            flat = [text for texts in slots for text in texts]
        moderated = "input" not in checked
        ask_provider = moderated and self._guard.asks_provider(policy)
        redaction: Redaction | None = None
        for_provider: list[str] | None = None
        if policy.pii.action != "allow" and policy.pii.types:
            local = route is not None and all(entry.local for entry in route.entries)
            if not local or ask_provider:
                candidate = Redaction(policy.pii.types)
                redacted = await redact_offloaded(candidate, flat)
                if candidate.active:
                    for_provider = redacted
                    if not local:
                        request, redaction = self._apply_pii(request, policy, candidate)
        if moderated:
            await self._guard.moderate(policy, flat, org_id=context.org_id, for_provider=for_provider)
        if redaction is not None and for_provider is not None:
            flat = for_provider
        if flat == given:  # no text rewritten (the usual case): the request as it came
            return request, redaction
        rebuilt = _unflatten(flat, [len(texts) for texts in slots])
        messages = tuple(_with_texts(message, texts) for message, texts in zip(request.messages, rebuilt, strict=True))
        if messages != request.messages:
            request = dataclasses.replace(request, messages=messages)
        return request, redaction

    def _injection(self, role: str, texts: list[str], policy: GuardPolicySettings, org_id: str | None,
                   checked: frozenset[str]) -> list[str]:
        if role not in ("user", "tool"):
            return texts
        where: Literal["input", "context"] = "input" if role == "user" else "context"
        if where in checked:
            return texts
        return [self._guard.apply_injection(text, policy, where=where, org_id=org_id) for text in texts]

    def _apply_pii(self, request: ChatRequest, policy: GuardPolicySettings,
                   found: Redaction) -> tuple[ChatRequest, Redaction | None]:
        org_id, types = request.context.org_id, found.types_found
        action = policy.pii.action
        self._guard.note("pii", action, org_id, types=",".join(types))
        listed = ", ".join(types)
        if action == "block":
            raise ContentBlocked(f"The input contains personal data or secrets ({listed}); this tenant's policy "
                                 "does not send them to an external model.")
        if action == "route_local":
            # local_only changes the route: resolved again, and carried.
            local = dataclasses.replace(request, context=dataclasses.replace(request.context, local_only=True),
                                        route=None)
            local, route = carried_route(local, self._route)
            if route is None:
                raise ContentBlocked(f"The input contains personal data or secrets ({listed}); this tenant's "
                                     "policy keeps them on local models, and none can serve this request.")
            return local, None
        return request, found


async def _restored(events: AsyncGenerator[ChatEvent, None] | Any,
                    redaction: Redaction) -> AsyncGenerator[ChatEvent, None]:
    """The stream with placeholders put back in text and tool-call arguments."""
    text = redaction.restorer()
    arguments: dict[int, StreamRestorer] = {}
    async for event in events:
        if isinstance(event, Token):
            restored = text.feed(event.text)
            if restored:
                yield Token(restored)
            continue
        if isinstance(event, ToolCallDelta):
            restorer = arguments.setdefault(event.index, redaction.restorer())
            yield dataclasses.replace(event, arguments=restorer.feed(event.arguments))
            continue
        if isinstance(event, Usage | Done | ErrorEvent):
            rest = text.flush()
            if rest:
                yield Token(rest)
            for index, restorer in arguments.items():
                rest = restorer.flush()
                if rest:
                    yield ToolCallDelta(index=index, arguments=rest)
        yield event


def _texts(message: ChatMessage) -> list[str]:
    """A message's text slots: its content (or each text part), then each tool call's arguments."""
    if isinstance(message.content, str):
        texts = [message.content]
    else:
        texts = [str(part.get("text", "")) for part in message.content if part.get("type") == "text"]
    return texts + [call.arguments for call in message.tool_calls]


def _with_texts(message: ChatMessage, texts: Sequence[str]) -> ChatMessage:
    if list(texts) == _texts(message):
        return message
    slots = iter(texts)
    content: Any
    if isinstance(message.content, str):
        content = next(slots)
    else:
        content = tuple({**part, "text": next(slots)} if part.get("type") == "text" else part
                        for part in message.content)
    calls = tuple(dataclasses.replace(call, arguments=next(slots)) for call in message.tool_calls)
    return dataclasses.replace(message, content=content, tool_calls=calls)


def _unflatten(flat: Sequence[str], sizes: Sequence[int]) -> list[list[str]]:
    out, start = [], 0
    for size in sizes:
        out.append(list(flat[start:start + size]))
        start += size
    return out
