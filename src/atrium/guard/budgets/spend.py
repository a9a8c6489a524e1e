"""Spending controls around every gateway call: budgets (reserve before, settle after) and token rate
limits (report what the call used), as a wrapper implementing the ChatModel port.

``BudgetedChatModel`` is the outermost layer of the chat stack under the guard's, so a refused call never
reaches the cache, metering or a provider, and every endpoint that calls a model pays through it. Before
the call it reserves the most the call could cost: the prompt counted offline (times
``budgets.prompt_margin``) at the input price plus ``max_tokens`` (else the model's ``max_output_tokens``)
at the output price, for the dearest candidate of the request's route (the one it carries), since
fallback may switch models. Over budget, it raises
``BudgetExceeded`` before the first event (a refusal of the request, like the router's 404, not a provider
failure). When the stream ends, however it ends (finished, cut, upstream error after tokens, the client
gone, the task cancelled), it settles with what the call actually cost: the provider's usage, else the
tokens counted offline from what streamed, at the serving model's price, as metering counts them; a cache
hit costs nothing. Settling runs in its own task, shielded from the caller's cancellation.

Embeddings (``Gateway.embed``) go through :func:`embedding_spend`: reserved by their input tokens at the
embedding price, settled with the tokens the embedder reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from atrium.gateway.catalogue import CatalogueEntry, Route, price_of
from atrium.gateway.metering import CallTally
from atrium.gateway.ports import (
    CallContext,
    ChatEvent,
    ChatModel,
    ChatRequest,
    carried_route,
)
from atrium.gateway.pricing import Price
from atrium.gateway.tokens import TokenCounter
from atrium.gateway.wrapping import ChatModelWrapper
from atrium.guard.budgets.ledger import BudgetGuard, Hold, micro_usd

log = logging.getLogger(__name__)


class TokenLimits(Protocol):
    """Where the tokens a call used are reported (``atrium.guard.rate_limits.RequestRateLimiter``)."""

    def counts_tokens(self, api_key_id: str | None) -> bool: ...

    async def record_tokens(self, *, org_id: str | None, user_id: str | None, api_key_id: str | None,
                            tokens: int) -> None: ...


class SpendControl:
    """Budgets and token limits for gateway calls; either may be absent. Owns the settling tasks, so none
    is lost when its caller is cancelled (``aclose`` waits for them)."""

    def __init__(self, *, counter: TokenCounter, budgets: BudgetGuard | None = None,
                 tokens: TokenLimits | None = None, prompt_margin: float = 1.0) -> None:
        self.counter = counter
        self._budgets = budgets if budgets is not None and budgets.enabled else None
        self._tokens = tokens
        self._margin = prompt_margin
        self._tasks: set[asyncio.Task[Any]] = set()

    def counts_tokens(self, context: CallContext) -> bool:
        return self._tokens is not None and bool(context.org_id) and self._tokens.counts_tokens(context.api_key_id)

    async def hold(self, context: CallContext, max_cost: Callable[[float], int]) -> Hold | None:
        """Reserve ``max_cost(prompt_margin)`` micro-USD in the caller's budgets (computed only when one
        applies); ``None`` when none does. Raises ``BudgetExceeded``."""
        if self._budgets is None or not context.org_id:
            return None
        budgets = self._budgets
        if not await budgets.applicable(context.org_id, context.user_id, context.api_key_id):
            return None
        reserving = self._spawn(budgets.reserve(context.org_id, context.user_id, context.api_key_id,
                                                max_cost(self._margin)))
        try:
            return await asyncio.shield(reserving)
        except asyncio.CancelledError:
            # The caller is gone; whatever the reservation holds once it lands is given back.
            reserving.add_done_callback(self._release_when_held)
            raise

    async def finish(self, context: CallContext, hold: Hold | None, cost: int, tokens: int) -> None:
        """Settle ``hold`` with ``cost`` and report ``tokens``; runs to the end even if the caller is
        cancelled meanwhile."""
        if hold is None and not (tokens and self.counts_tokens(context)):
            return
        task = self._spawn(self._finish(context, hold, cost, tokens))
        with anyio.CancelScope(shield=True):  # a cancelled scope waits for it; a cancelled task leaves it running
            await asyncio.shield(task)

    async def _finish(self, context: CallContext, hold: Hold | None, cost: int, tokens: int) -> None:
        if hold is not None and self._budgets is not None:
            try:
                await self._budgets.settle(hold, cost)
            except Exception:
                log.exception("could not settle a budget reservation; it is released when it expires")
        if tokens and self._tokens is not None and self.counts_tokens(context):
            await self._tokens.record_tokens(org_id=context.org_id, user_id=context.user_id,
                                             api_key_id=context.api_key_id, tokens=tokens)

    def _release_when_held(self, reserving: asyncio.Task[Hold | None]) -> None:
        if reserving.cancelled() or reserving.exception() is not None:
            return
        hold = reserving.result()
        if hold is not None and self._budgets is not None:
            self._spawn(self._budgets.settle(hold, 0))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Wait for settlements still running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._budgets is not None:
            await self._budgets.aclose()


class BudgetedChatModel(ChatModelWrapper):
    """The budget layer of the chat stack: see the module docstring. ``route_of`` resolves a request's
    candidate models (the router's ``route``) when the request carries no route yet; ``entries`` price
    the model that served."""

    def __init__(self, inner: ChatModel, control: SpendControl, *, route_of: Callable[[ChatRequest], Route],
                 entries: Mapping[str, CatalogueEntry]) -> None:
        super().__init__(inner)
        self._control = control
        self._route_of = route_of
        self._entries = entries

    async def aclose(self) -> None:
        await super().aclose()
        await self._control.aclose()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        context = request.context
        # None: an unknown or forbidden model; the router answers with its error, nothing is spent.
        request, route = carried_route(request, self._route_of)
        hold = await self._control.hold(context, lambda margin: self._max_cost(request, route, margin))
        if hold is None and not self._control.counts_tokens(context):
            async with self._open(request) as events:
                async for event in events:
                    yield event
            return
        spent = CallTally()
        try:
            async with self._open(request) as events:
                async for event in events:
                    spent.see(event)
                    yield event
        finally:
            usage = spent.usage_of(request, self._control.counter)
            price = price_of(self._entries, spent.model) if spent.model else Price()
            cost = 0 if spent.cached else micro_usd(usage.prompt_tokens, usage.completion_tokens,
                                                    price.input_per_1m, price.output_per_1m)
            await self._control.finish(context, hold, cost, 0 if spent.cached else usage.total_tokens)

    def _max_cost(self, request: ChatRequest, route: Route | None, margin: float) -> int:
        if route is None:
            return 0
        prompt = self._control.counter.count_messages(request.messages)
        if request.tools or request.response_format:
            prompt += self._control.counter.count(json.dumps([*request.tools, request.response_format or {}],
                                                             default=str))
        return max((micro_usd(prompt * margin, request.max_tokens or entry.max_output_tokens,
                              entry.price.input_per_1m, entry.price.output_per_1m) for entry in route.entries),
                   default=0)


@dataclass
class EmbeddingUsage:
    """Filled by the embedding call: how many input tokens it used."""

    tokens: int = 0


@asynccontextmanager
async def embedding_spend(control: SpendControl | None, context: CallContext, price: Price,
                          texts: Sequence[str]) -> AsyncIterator[EmbeddingUsage]:
    """Reserve an embedding call's input tokens at ``price`` before it, settle with the tokens it used
    (set ``usage.tokens``) after it, whatever happens."""
    usage = EmbeddingUsage()
    if control is None:
        yield usage
        return
    hold = None
    if price.input_per_1m > 0:
        hold = await control.hold(context, lambda margin: micro_usd(
            sum(control.counter.count(text) for text in texts) * margin, 0, price.input_per_1m, 0))
    try:
        yield usage
    finally:
        await control.finish(context, hold, micro_usd(usage.tokens, 0, price.input_per_1m, 0), usage.tokens)
