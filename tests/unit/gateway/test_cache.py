"""The response cache: exact match per tenant, finished answers only, per-request opt-out, Redis shared."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from atrium.gateway.cache import CachedChatModel, cache_key
from atrium.gateway.cache_stores import InProcessCacheStore, RedisCacheStore
from atrium.gateway.ports import CallContext, ChatEvent, ChatMessage, ChatModel, ChatRequest, Done, Start, Token, Usage
from atrium.gateway.providers.fake import FakeChatModel


def request(text: str = "hello there", *, org: str | None = "org-a", cache: bool = True,
            temperature: float = 0.0) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), temperature=temperature,
                       context=CallContext(org_id=org, cache=cache))


async def collect(model: ChatModel, req: ChatRequest) -> list[ChatEvent]:
    return [event async for event in model.stream(req)]


def text(events: Sequence[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


def cached_model(inner: ChatModel) -> CachedChatModel:
    return CachedChatModel(inner, InProcessCacheStore(max_entries=100, ttl_s=60), ttl_s=60, max_entry_bytes=10_000)


async def test_a_repeat_is_served_from_the_cache_with_the_same_answer() -> None:
    inner = FakeChatModel(answer=lambda _r: "Paris is the capital.")
    model = cached_model(inner)
    first = await collect(model, request())
    second = await collect(model, request())
    assert len(inner.requests) == 1
    assert text(second) == text(first) == "Paris is the capital."
    assert isinstance(second[0], Start) and second[0].model == "fake"
    assert isinstance(second[-1], Done) and second[-1].cached and not first[-1].cached  # type: ignore[union-attr]
    assert [e for e in second if isinstance(e, Usage)] == [e for e in first if isinstance(e, Usage)]


async def test_tenants_never_share_entries_and_opt_out_bypasses() -> None:
    inner = FakeChatModel(answer=lambda _r: "an answer")
    model = cached_model(inner)
    await collect(model, request(org="org-a"))
    await collect(model, request(org="org-b"))
    await collect(model, request(org="org-a", cache=False))
    await collect(model, request(org=None))
    await collect(model, request(org=None))
    assert len(inner.requests) == 5
    assert cache_key(request(org="org-a")) != cache_key(request(org="org-b"))
    assert cache_key(request(cache=False)) is None and cache_key(request(org=None)) is None
    # any parameter is part of the key
    assert cache_key(request(temperature=0.0)) != cache_key(request(temperature=0.7))


async def test_failed_answers_are_not_cached() -> None:
    inner = FakeChatModel(answer=lambda _r: "one two three", fail_after_tokens=1)
    model = cached_model(inner)
    await collect(model, request())
    await collect(model, request())
    assert len(inner.requests) == 2


async def test_redis_store_is_shared_between_replicas(redis_url: str) -> None:
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        inner_a, inner_b = FakeChatModel(answer=lambda _r: "shared"), FakeChatModel(answer=lambda _r: "other")
        replica_a = CachedChatModel(inner_a, RedisCacheStore(one), ttl_s=60, max_entry_bytes=10_000)
        replica_b = CachedChatModel(inner_b, RedisCacheStore(two), ttl_s=60, max_entry_bytes=10_000)
        await collect(replica_a, request())
        events = await collect(replica_b, request())
        assert text(events) == "shared" and inner_b.requests == []
        ttl = await one.pttl("atrium:cache:" + (cache_key(request()) or ""))
        assert 0 < ttl <= 60_000
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_broken_store_serves_uncached() -> None:
    class Broken(InProcessCacheStore):
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("cache down")

    inner = FakeChatModel(answer=lambda _r: "still answered")
    model = CachedChatModel(inner, Broken(max_entries=1, ttl_s=1), ttl_s=1, max_entry_bytes=10_000)
    assert text(await collect(model, request())) == "still answered"


async def test_an_answer_is_cached_even_when_the_caller_stops_reading_at_done() -> None:
    inner = FakeChatModel(answer=lambda _r: "early stop")
    model = cached_model(inner)
    stream = model.stream(request())
    async for event in stream:
        if isinstance(event, Done):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await collect(model, request())
    assert len(inner.requests) == 1
