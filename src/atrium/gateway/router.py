"""The router: per request, pick the candidate models and walk them as a fallback chain.

``RouterChatModel`` implements the ChatModel port over the catalogue's members (each member already
wrapped in its breaker, first-event timeout and retries). For every request it resolves the requested
name (model, alias, route, or the task's route) with the tenant's policy applied, orders the candidates by
the route's strategy (configured order, lowest cost, lowest latency, weighted) and streams through them
with fallback: a failure before the first token moves on silently; after tokens began the typed error
ends the stream. It sends ``Start`` naming the model that serves, just before that model's first output
(the fallback chain does, from the ``starts`` it is given). Its stream is the fallback chain's own.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

from atrium.errors import AppError
from atrium.gateway.catalogue import Catalogue, Route
from atrium.gateway.fallback import stream_with_fallback
from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, ErrorEvent, Start
from atrium.gateway.strategies import Candidate, LatencyTracker, order_candidates


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

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        # The fallback chain's stream itself (not one more async layer per event around it).
        try:
            route = self.route(request)
        except AppError as exc:
            return _failed(ErrorEvent(code=exc.code, message=exc.message))
        candidates = order_candidates(
            [Candidate(name=e.name, input_price_per_1m=e.price.input_per_1m,
                       output_price_per_1m=e.price.output_per_1m, weight=e.weight, local=e.local)
             for e in route.entries],
            route.strategy, latency=self._latency, rng=self._rng)
        entries = {e.name: e for e in route.entries}
        return stream_with_fallback([self._members[c.name] for c in candidates], request,
                                    starts=[Start(model=c.name, provider=entries[c.name].provider)
                                            for c in candidates])


async def _failed(error: ErrorEvent) -> AsyncGenerator[ChatEvent, None]:
    yield error


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

