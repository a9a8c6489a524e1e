"""Answer-run events as Server-Sent Events frames (sse-starlette): ``id`` (the event's place in its run's
stream, what a client sends back as ``Last-Event-ID`` to resume), ``event`` and JSON ``data``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from atrium.conversations.ports import RunEvent


async def sse_frames(events: AsyncIterator[RunEvent]) -> AsyncIterator[dict[str, str]]:
    async for item in events:
        yield {"id": str(item.seq), "event": item.event, "data": json.dumps(item.data, ensure_ascii=False)}
