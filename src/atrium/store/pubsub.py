"""The PubSub backends (port: ``store/ports.py``): fire-and-forget notifications between the parts of Atrium,
and between replicas.

In-process for the embedded profile; Redis pub/sub when ``ATRIUM_REDIS_URL`` is set, so every replica hears
what one of them did (for example, that a tenant's documents changed and its vector index must catch up).
Messages are hints, never the truth: a missed message only delays work that a periodic check does anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import redis.asyncio as redis


class InProcessPubSub:
    """Subscribers of this process only; each has its own unbounded queue."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[str]]] = {}

    async def publish(self, channel: str, message: str) -> None:
        for queue in list(self._queues.get(channel, ())):
            queue.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._queues.setdefault(channel, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues[channel].discard(queue)

    async def aclose(self) -> None:
        self._queues.clear()


class RedisPubSub:
    """Redis PUBLISH/SUBSCRIBE through one shared client (redis-py asyncio); channel names are prefixed."""

    def __init__(self, url: str, *, prefix: str = "atrium:") -> None:
        self._client = redis.Redis.from_url(url)
        self._prefix = prefix

    async def publish(self, channel: str, message: str) -> None:
        await self._client.publish(self._prefix + channel, message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self._prefix + channel)
        try:
            while True:
                item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                if item is not None and item.get("type") == "message":
                    data = item["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)
        finally:
            await pubsub.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
