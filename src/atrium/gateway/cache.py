"""Response cache: an exact-match cache of finished answers, as a wrapper implementing the ChatModel port.

The key is a hash of (tenant, requested model, normalised request): the messages, sampling parameters,
tools and response format, serialised with sorted keys so equal requests hash equally. The tenant is
part of the key, so one tenant's answers are never served to another; calls without a tenant are not
cached. Only answers that finished (``Done``) are stored; a request opts out with
``context.cache=False``. A hit replays the answer as ``Start``, one ``Token``, the tool calls, ``Usage``
and ``Done(cached=True)``.

The entries live in a ``CacheStore`` (``gateway/ports.py``): in-process or Redis (``gateway/cache_stores.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import asdict
from typing import Any

from atrium.gateway.ports import (
    CacheStore,
    ChatEvent,
    ChatModel,
    ChatRequest,
    Done,
    Start,
    Token,
    ToolCallDelta,
    Usage,
)
from atrium.gateway.wrapping import ChatModelWrapper

log = logging.getLogger(__name__)


def cache_key(request: ChatRequest) -> str | None:
    """The request's cache key, or ``None`` when it must not be cached (no tenant, or opted out)."""
    context = request.context
    if not context.cache or not context.org_id:
        return None
    normalised = {
        "org": context.org_id,
        "model": request.model,
        "task": context.task,
        "local_only": context.local_only,
        "messages": [
            {"role": m.role, "content": m.content if isinstance(m.content, str) else list(m.content),
             "tool_calls": [asdict(c) for c in m.tool_calls], "tool_call_id": m.tool_call_id, "name": m.name}
            for m in request.messages
        ],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stop": list(request.stop),
        "tools": list(request.tools),
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "extra": request.extra,
    }
    raw = json.dumps(normalised, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class CachedChatModel(ChatModelWrapper):
    """Serves finished answers again from ``store`` for ``ttl_s`` seconds."""

    def __init__(self, inner: ChatModel, store: CacheStore, *, ttl_s: float, max_entry_bytes: int) -> None:
        super().__init__(inner)
        self._store = store
        self._ttl_s = ttl_s
        self._max_entry_bytes = max_entry_bytes

    async def aclose(self) -> None:
        await super().aclose()
        await self._store.aclose()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        key = cache_key(request)
        if key is not None:
            hit = await self._lookup(key)
            if hit is not None:
                for event in hit:
                    yield event
                return
        seen: list[ChatEvent] = []
        async with self._open(request) as events:
            async for event in events:
                if key is not None:
                    seen.append(event)
                    if isinstance(event, Done):  # saved before Done goes out: callers may stop reading there
                        await self._save(key, seen)
                yield event

    async def _lookup(self, key: str) -> list[ChatEvent] | None:
        try:
            raw = await self._store.get(key)
            return _replay(json.loads(raw)) if raw is not None else None
        except Exception:  # a cache failure must never fail the call: serve it uncached
            log.warning("response cache lookup failed", exc_info=True)
            return None

    async def _save(self, key: str, events: list[ChatEvent]) -> None:
        raw = json.dumps(_snapshot(events), separators=(",", ":")).encode()
        if len(raw) > self._max_entry_bytes:
            return
        try:
            await self._store.set(key, raw, self._ttl_s)
        except Exception:
            log.warning("response cache write failed", exc_info=True)


def _snapshot(events: list[ChatEvent]) -> dict[str, Any]:
    done = events[-1]
    assert isinstance(done, Done)
    usage = next((e for e in events if isinstance(e, Usage)), None)
    start = next((e for e in events if isinstance(e, Start)), None)
    return {
        "text": "".join(e.text for e in events if isinstance(e, Token)),
        "tool_calls": [[e.index, e.id, e.name, e.arguments] for e in events if isinstance(e, ToolCallDelta)],
        "usage": [usage.prompt_tokens, usage.completion_tokens] if usage else None,
        "model": done.model,
        "provider": done.provider or (start.provider if start else ""),
        "finish_reason": done.finish_reason,
        "stop_sequence": done.stop_sequence,
    }


def _replay(data: dict[str, Any]) -> list[ChatEvent]:
    events: list[ChatEvent] = [Start(model=data["model"], provider=data["provider"])]
    if data["text"]:
        events.append(Token(data["text"]))
    events.extend(ToolCallDelta(index=i, id=call_id, name=name, arguments=args)
                  for i, call_id, name, args in data["tool_calls"])
    if data["usage"]:
        events.append(Usage(prompt_tokens=data["usage"][0], completion_tokens=data["usage"][1]))
    events.append(Done(model=data["model"], finish_reason=data["finish_reason"], provider=data["provider"],
                       cached=True, stop_sequence=data.get("stop_sequence")))
    return events
