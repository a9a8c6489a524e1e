"""The gateway as the rest of Atrium sees it, and how it is assembled from settings.

The chat stack, outermost first (each layer implements the ChatModel port)::

    GuardedChatModel        the guard pipeline's stages on the call: injection, moderation, PII redaction/
                            routing, restore (guard/model_calls.py, built by the pipeline when the guard is on)
    BudgetedChatModel       budgets: reserve the most a call may cost, settle what it cost; token limits
                            (only when budgets or token limits are on; see guard/budgets/spend.py)
    MeteredChatModel        one usage record per call, offline token counts when the provider gave none
      CachedChatModel       exact-match response cache, per tenant
        TotalTimeout        the whole call, every attempt and the stream included
          RouterChatModel   resolve model/alias/route + tenant policy, order by strategy, fallback chain
            per model: Retrying(BreakerChatModel(LatencyObserving(FirstEventTimeout(adapter))))

A call's route is resolved once, at the front (``Gateway.check``, then the request carries it in
``ChatRequest.route``) or by the outermost layer that needs it; every layer reuses it.

Breakers are per provider (every model of one provider shares it); their state lives in Redis when
``redis_url`` is set, so every replica sees the same state.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from atrium.errors import InvalidRequest
from atrium.gateway.breaker import BreakerChatModel, BreakerRegistry
from atrium.gateway.breaker_stores import InProcessBreakerStore, RedisBreakerStore
from atrium.gateway.cache import CachedChatModel
from atrium.gateway.cache_stores import InProcessCacheStore, RedisCacheStore
from atrium.gateway.catalogue import Catalogue, CatalogueEntry, Route, catalogue_entries, price_of
from atrium.gateway.metering import MeteredChatModel, UsageRecorder, UsageRow
from atrium.gateway.ports import (
    BreakerStore,
    CacheStore,
    CallContext,
    ChatModel,
    ChatRequest,
    Embedder,
    Vectors,
)
from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
from atrium.gateway.providers.registry import build_chat_adapter, build_embedding_adapter
from atrium.gateway.retry import RetryingChatModel
from atrium.gateway.router import RouterChatModel
from atrium.gateway.settings import ChatSettings, GatewaySettings
from atrium.gateway.strategies import LatencyTracker
from atrium.gateway.timeouts import FirstEventTimeout, LatencyObservingChatModel, TotalTimeout
from atrium.gateway.tokens import TokenCounter
from atrium.gateway.tracing import TracedChatModel
from atrium.guard.budgets.spend import BudgetedChatModel, SpendControl, embedding_spend
from atrium.store.engine import Database
from atrium.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from atrium.guard.pipeline import GuardPipeline

EMBEDDED_PROVIDER = "embedded"


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: Vectors
    model: str
    prompt_tokens: int


@dataclass
class Gateway:
    catalogue: Catalogue
    chat: ChatModel
    router: RouterChatModel
    embedders: Mapping[str, Embedder]
    breakers: BreakerRegistry
    recorder: UsageRecorder
    counter: TokenCounter
    metrics: Metrics
    spend: SpendControl | None = None  # budgets and token limits (chat calls: BudgetedChatModel in ``chat``)
    guard: GuardPipeline | None = None  # the embedding calls' input stage (chat calls: its wrapper in ``chat``)

    def check(self, request: ChatRequest) -> Route:
        """Resolve the request's model now, so an endpoint can answer 404/403 before it starts a stream;
        the request then carries the route (``with_route``), so no layer resolves it again."""
        return self.router.route(request)

    async def embed(self, model: str, texts: Sequence[str], context: CallContext, *,
                    route: Route | None = None) -> EmbeddingResult:
        """Embed ``texts`` after the guard's input stage, within the caller's budgets, metered. ``route``:
        the model's route when the caller resolved it already."""
        route = route or self.catalogue.route(model, org_id=context.org_id, local_only=context.local_only,
                                              kind="embedding")
        entry = route.entries[0]
        if self.guard is not None:  # moderation and the PII policy
            texts = await self.guard.embedding_input(context.org_id, texts, local=entry.local)
        embedder = self.embedders[entry.name]
        started = time.perf_counter()
        with_usage = getattr(embedder, "embed_with_usage", None)
        price = price_of(self.catalogue.entries, entry.name)
        async with embedding_spend(self.spend, context, price, texts) as spent:
            if with_usage is not None:
                vectors, tokens, estimated = await with_usage(texts)
            else:
                vectors, estimated = await embedder.embed(texts), True
                tokens = sum(embedder.count_tokens(t) for t in texts)
            spent.tokens = tokens
        self.metrics.observe_embedding(entry.name, "api", len(texts), time.perf_counter() - started)
        cost = price.cost(tokens, 0)
        row = UsageRow(org_id=context.org_id or "", user_id=context.user_id, api_key_id=context.api_key_id,
                       endpoint=context.endpoint, provider=entry.provider, model=entry.name,
                       prompt_tokens=tokens, completion_tokens=0, cost_usd=cost,
                       latency_ms=(time.perf_counter() - started) * 1000, outcome="ok",
                       estimated=estimated)
        if context.org_id:
            self.recorder.record(row)
        return EmbeddingResult(vectors=np.asarray(vectors, dtype=np.float32), model=entry.name,
                               prompt_tokens=tokens)

    async def breaker_states(self) -> list[dict[str, object]]:
        snapshots = await self.breakers.snapshots()
        self.metrics.set_breakers((s.name, s.state, s.failures) for s in snapshots)
        return [
            {"provider": s.name, "state": s.state, "failures": s.failures, "opened_at": s.opened_at,
             "retry_in_s": s.retry_in_s}
            for s in snapshots
        ]

    async def aclose(self) -> None:
        await self.chat.aclose()
        await self.recorder.aclose()


def build_gateway(gateway: GatewaySettings, chat_settings: ChatSettings, *, http_client: httpx.AsyncClient,
                  db: Database, redis: Redis | None, embedder: Embedder, metrics: Metrics, counter: TokenCounter,
                  local_factory: Callable[[str], ChatModel], chat_model: ChatModel | None = None,
                  environ: Mapping[str, str] | None = None, spend: SpendControl | None = None,
                  guard: GuardPipeline | None = None, tracer: trace.Tracer | None = None) -> Gateway:
    """The gateway's stack over ``gateway``'s catalogue. ``tracer``: spans for every call and every attempt
    (``gateway/tracing.py``); None (tracing off) adds no layer."""
    config = gateway if chat_model is None else gateway.without_implied_models()
    environ = os.environ if environ is None else environ
    entries = catalogue_entries(config)
    adapters: dict[str, ChatModel] = {}
    embedders: dict[str, Embedder] = {}
    for entry in entries:
        model, provider = config.models[entry.name], config.providers[entry.provider]
        if entry.kind == "embedding":
            embedders[entry.name] = build_embedding_adapter(entry.name, model, entry.provider, provider,
                                                            http_client, environ=environ)
        else:
            adapters[entry.name] = build_chat_adapter(entry.name, model, entry.provider, provider, http_client,
                                                      environ=environ, local_factory=local_factory)
    if chat_model is not None:
        entries.append(CatalogueEntry(name=chat_model.name, provider="injected", provider_kind="injected",
                                      upstream_model=chat_model.name))
        adapters[chat_model.name] = chat_model
        if config.default_model is None:
            config = config.model_copy(update={"default_model": chat_model.name})
    # The knowledge room's embedder; with ``embedding.provider = openai`` its texts leave the machine.
    remote = isinstance(embedder, OpenAIEmbeddings)
    entries.append(CatalogueEntry(name=embedder.name, provider=EMBEDDED_PROVIDER,
                                  provider_kind="openai" if remote else "local", upstream_model=embedder.name,
                                  kind="embedding", local=not remote, dimensions=embedder.dimensions))
    embedders[embedder.name] = embedder
    if not adapters:
        raise InvalidRequest("gateway.models has no chat model")
    catalogue = Catalogue(entries, config)

    store: BreakerStore = RedisBreakerStore(redis) if redis is not None else InProcessBreakerStore()
    breakers = BreakerRegistry(config.breaker, store)
    latency = LatencyTracker()
    members: dict[str, ChatModel] = {}
    for entry in entries:
        if entry.kind != "chat":
            continue
        # The local model may queue requests behind each other: its first token can take minutes.
        first_event = (chat_settings.request_timeout_s if entry.provider_kind == "local"
                       else config.attempt_timeout_s)
        timed: ChatModel = LatencyObservingChatModel(FirstEventTimeout(adapters[entry.name], first_event), latency,
                                                     key=entry.name)
        if tracer is not None:  # one span per attempt, beneath the retries and the breaker
            timed = TracedChatModel(timed, tracer, "gateway.provider", provider=entry.provider,
                                    kind=SpanKind.CLIENT)
        members[entry.name] = RetryingChatModel(BreakerChatModel(timed, breakers.get(entry.provider)),
                                                config.retry)
    router = RouterChatModel(catalogue, members, latency=latency, rng=random.Random())
    cache_store: CacheStore = (RedisCacheStore(redis) if redis is not None else
                               InProcessCacheStore(max_entries=config.cache.max_entries, ttl_s=config.cache.ttl_s))
    stack: ChatModel = TotalTimeout(router, config.total_timeout_s)
    if config.cache.enabled:
        stack = CachedChatModel(stack, cache_store, ttl_s=config.cache.ttl_s,
                                max_entry_bytes=config.cache.max_entry_bytes)
    recorder = UsageRecorder(db)

    def observe(row: UsageRow) -> None:
        metrics.observe_call(model=row.model, provider=row.provider, outcome=row.outcome,
                             prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                             cost_usd=row.cost_usd, seconds=row.latency_ms / 1000)

    chat: ChatModel = MeteredChatModel(stack, recorder, catalogue.entries, counter, observe=observe,
                                       first_token=metrics.observe_first_token)
    if spend is not None:
        chat = BudgetedChatModel(chat, spend, route_of=router.route, entries=catalogue.entries)
    if guard is not None:  # outermost: budgets, cache and metering see only redacted prompts
        chat = guard.wrap(chat, route=router.route)
    if tracer is not None:
        chat = TracedChatModel(chat, tracer, "gateway.chat")
    return Gateway(catalogue=catalogue, chat=chat, router=router, embedders=embedders, breakers=breakers,
                   recorder=recorder, counter=counter, metrics=metrics, spend=spend, guard=guard)
