"""The CacheStore backends of the response cache (``cache.py``).

``InProcessCacheStore`` (embedded default; cachetools' TTL cache) and ``RedisCacheStore`` (scale profile;
shared by every replica, expiry by Redis).
"""

from __future__ import annotations

from cachetools import TTLCache
from redis.asyncio import Redis


class InProcessCacheStore:
    """Entries in this process's memory, at most ``max_entries``, each kept ``ttl_s`` seconds."""

    def __init__(self, *, max_entries: int, ttl_s: float) -> None:
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=ttl_s)

    async def get(self, key: str) -> bytes | None:
        return self._entries.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = value  # one TTL for the whole store (the configured one)

    async def aclose(self) -> None:
        self._entries.clear()


class RedisCacheStore:
    """Entries in Redis with a per-key expiry; the client is shared and owned by the caller."""

    def __init__(self, client: Redis, *, prefix: str = "atrium:cache:") -> None:
        self._client = client
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        value: bytes | str | None = await self._client.get(self._prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(self._prefix + key, value, px=max(1, int(ttl_s * 1000)))

    async def aclose(self) -> None:
        """The shared client is closed by its owner."""
