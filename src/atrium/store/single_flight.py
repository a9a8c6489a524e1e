"""One read per key at a time: the stampede guard of the caches in front of the database.

When a cached entry expires under load, every request that arrives before it is filled again would run
the same query, each waiting its turn on the database driver's thread. With 50 streams starting together
that put 25-55 ms (p90) on their first token (bench/gateway_ttft.py). Callers that ask for a key already
being read wait for that read instead.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Shares each key's read among the callers that ask while it runs."""

    def __init__(self) -> None:
        self._reads: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        """``read()``'s result, or the result of the read of ``key`` already under way; its error too."""
        pending = self._reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(read())
            self._reads[key] = pending
            pending.add_done_callback(functools.partial(self._finished, key))
        # A caller that gives up (its client left) must not cancel the read the others wait for.
        return await asyncio.shield(pending)

    def forget(self, key: K) -> None:
        """Callers from now on start a new read of ``key`` (what it names changed)."""
        self._reads.pop(key, None)

    def _finished(self, key: K, read: asyncio.Future[V]) -> None:
        if self._reads.get(key) is read:
            del self._reads[key]
        if not read.cancelled():
            read.exception()  # retrieved: its waiters have it, or all of them left
