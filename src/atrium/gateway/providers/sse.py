"""Server-sent events, read line by line from an HTTP body (shared by the OpenAI and Anthropic formats).

Only what the upstreams use: ``event:`` names the event, ``data:`` lines are joined with newlines, a blank
line dispatches, comment lines (``: ping``) and other fields (``id``, ``retry``) are ignored. One space
after the colon is optional, as the spec says.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"  # the spec's default type when the stream names none


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of a stream, one per blank-line-terminated block that carried data. An unterminated
    last event (the body ended without its blank line) is passed on too: the caller decides whether the
    stream was complete."""
    data: list[str] = []
    event = ""
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent("\n".join(data), event or "message")
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield ServerSentEvent("\n".join(data), event or "message")
