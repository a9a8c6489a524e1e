"""The store's ports: PubSub, fire-and-forget notifications between the parts of Atrium and between replicas.

Messages are hints, never the truth: a missed message only delays work that a periodic check does anyway.
Backends (in-process, Redis): ``store/pubsub.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class PubSub(Protocol):
    """Publish short string messages on named channels; ``subscribe`` yields them until closed."""

    async def publish(self, channel: str, message: str) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


async def follow(pubsub: PubSub, channel: str, on_message: Callable[[str], None], *,
                 on_gap: Callable[[], None] | None = None, retry_s: float = 1.0) -> None:
    """Hand every message of ``channel`` to ``on_message`` until cancelled. When the subscription breaks,
    messages may have been missed: ``on_gap`` is called (drop what they would have invalidated) and the
    subscription is taken again after ``retry_s``."""
    while True:
        try:
            async for message in pubsub.subscribe(channel):
                on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("subscription to %r failed; subscribing again", channel, exc_info=True)
            if on_gap is not None:
                on_gap()
        await asyncio.sleep(retry_s)
