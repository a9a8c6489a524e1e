"""The router: per request, pick the candidate models and walk them as a fallback chain.

``RouterChatModel`` implements the ChatModel port over the catalogue's members (each member already
wrapped in its breaker, first-event timeout and retries). For every request it resolves the requested
name (model, alias, route, or the task's route) with the tenant's policy applied, orders the candidates by
the route's strategy (configured order, lowest cost, lowest latency, weighted) and streams through them
with fallback: a failure before the first token moves on silently; after tokens began the typed error
ends the stream. It sends ``Start`` naming the model that serves, just before that model's first output.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncGenerator, Mapping

from atrium.errors import AppError
from atrium.gateway.catalogue import Catalogue, CatalogueEntry, Route
from atrium.gateway.fallback import closing_stream, stream_with_fallback
from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, ErrorEvent, Start
from atrium.gateway.routing import Candidate, LatencyTracker, order_candidates


class RouterChatModel:
    def __init__(self, catalogue: Catalogue, members: Mapping[str, ChatModel], *,
                 latency: LatencyTracker, rng: random.Random | None = None) -> None:
        self.name = "router"
        self._catalogue = catalogue
        self._members = members
        self._latency = latency
        self._rng = rng or random.Random()

    def route(self, request: ChatRequest) -> Route:
        """The request's route with tenant policy applied (the one it carries, when resolved before);
        raises ``NotFound``/``Forbidden``."""
        if request.route is not None:
            return request.route
        context = request.context
        return self._catalogue.route(request.model, task=context.task, org_id=context.org_id,
                                     local_only=context.local_only, needs=needs_of(request))

    async def ready(self) -> bool:
        route = self._catalogue.route("")
        return any([await self._members[e.name].ready() for e in route.entries])

    async def aclose(self) -> None:
        for member in self._members.values():
            await member.aclose()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        try:
            route = self.route(request)
        except AppError as exc:
            yield ErrorEvent(code=exc.code, message=exc.message)
            return
        candidates = order_candidates(
            [Candidate(name=e.name, input_price_per_1m=e.price.input_per_1m,
                       output_price_per_1m=e.price.output_per_1m, weight=e.weight, local=e.local)
             for e in route.entries],
            route.strategy, latency=self._latency, rng=self._rng)
        entries = {e.name: e for e in route.entries}
        chain = [_Announced(self._members[c.name], entries[c.name]) for c in candidates]
        async with contextlib.aclosing(stream_with_fallback(chain, request)) as events:
            async for event in events:
                yield event


def needs_of(request: ChatRequest) -> frozenset[str]:
    """The capabilities a request needs: tools, JSON mode, vision (image parts)."""
    needs = set()
    if request.tools:
        needs.add("tools")
    if request.response_format and request.response_format.get("type") in ("json_object", "json_schema"):
        needs.add("json")
    if any(not isinstance(m.content, str) and any(p.get("type") == "image_url" for p in m.content)
           for m in request.messages):
        needs.add("vision")
    return frozenset(needs)


class _Announced:
    """Sends ``Start`` (catalogue name, provider) just before the member's first output."""

    def __init__(self, inner: ChatModel, entry: CatalogueEntry) -> None:
        self.name = entry.name
        self._inner = inner
        self._start = Start(model=entry.name, provider=entry.provider)

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        announced = False
        async with closing_stream(self._inner.stream(request)) as events:
            async for event in events:
                if not announced and not isinstance(event, ErrorEvent):
                    announced = True
                    yield self._start
                yield event
