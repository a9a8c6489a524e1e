"""One contract for the realtime EventPublisher (``PubSubPublisher``) over each PubSub adapter (in-process,
Redis): an event published by one hub reaches the allowed sockets of every hub following the channel,
with its data, audience, topic and publication time intact, in order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from atrium.accounts.ownership import Owner
from atrium.accounts.principal import Principal
from atrium.realtime.hub import Hub
from atrium.realtime.outbox import Outbox
from atrium.realtime.ports import Audience, Event
from atrium.realtime.settings import RealtimeSettings
from atrium.store.ports import PubSub
from atrium.store.pubsub import InProcessPubSub, RedisPubSub


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.integration)])
async def pubsub(request: pytest.FixtureRequest) -> AsyncIterator[PubSub]:
    made: PubSub = InProcessPubSub() if request.param == "in-process" else RedisPubSub(
        request.getfixturevalue("redis_url"))
    yield made
    await made.aclose()


async def test_published_events_reach_the_allowed_sockets_of_every_hub(pubsub: PubSub) -> None:
    received: dict[str, list[dict[str, object]]] = {"ann": [], "bob": []}
    hubs = [Hub(pubsub, RealtimeSettings()), Hub(pubsub, RealtimeSettings())]
    writers = []
    for hub, user in zip(hubs, ("ann", "bob"), strict=True):
        async def send(text: str, into: list[dict[str, object]] = received[user]) -> None:
            into.append(json.loads(text))

        async def close(code: int, reason: str) -> None: ...

        outbox = Outbox(send, close, size=64, max_dropped=64)
        hub.join(Principal(org_id="org1", user_id=user, role="member"), user, user, outbox).topics.add("thread:t")
        writers.append(asyncio.create_task(outbox.run()))
        await hub.start()
    await asyncio.sleep(0.3)  # subscribed (Redis needs the SUBSCRIBE round trip)
    try:
        before = time.time()
        publisher = hubs[0].publisher
        await publisher.publish(Event("org1", "artifact", {"n": 1, "text": "é"}, Audience.org()))
        await publisher.publish(Event("org1", "job", {"n": 2}, Audience.owner(Owner("bob", None))))
        await publisher.publish(Event("org1", "typing", {"n": 3}, Audience.org(), topic="thread:t"))
        await publisher.publish(Event("org1", "typing", {"n": 4}, Audience.org(), topic="thread:other"))
        await publisher.publish(Event("org2", "artifact", {"n": 5}, Audience.org()))
        for _ in range(200):
            if len(received["bob"]) >= 3 and len(received["ann"]) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        ann = [event for event in received["ann"] if event["type"] != "presence"]
        bob = [event for event in received["bob"] if event["type"] != "presence"]
        assert [(event["type"], event["n"]) for event in ann] == [("artifact", 1), ("typing", 3)]
        assert [(event["type"], event["n"]) for event in bob] == [("artifact", 1), ("job", 2), ("typing", 3)]
        assert ann[0]["text"] == "é" and ann[0]["id"] is None
        assert before <= float(ann[0]["ts"]) <= time.time()  # type: ignore[arg-type]
    finally:
        for task in writers:
            task.cancel()
        for hub in hubs:
            await hub.aclose()
