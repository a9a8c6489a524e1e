"""Server-sent events, read from the raw bytes of an HTTP body (shared by the OpenAI and Anthropic formats).

Only what the upstreams use: ``event:`` names the event, ``data:`` lines are joined with newlines, a blank
line dispatches, comment lines (``: ping``) and other fields (``id``, ``retry``) are ignored. One space
after the colon is optional, as the spec says. Lines end with ``\\n``, ``\\r\\n`` or ``\\r``, also when a
network chunk splits them.

Lines are cut from the bytes here rather than through httpx's text and line iterators: a stream chunk
then costs one generator step instead of four (this runs once per token of every stream).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"  # the spec's default type when the stream names none


async def server_sent_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of a body, one per blank-line-terminated block that carried data. An unterminated
    last event (the body ended without its blank line) is passed on too: the caller decides whether the
    stream was complete."""
    block = _Block()
    pending = b""
    async for chunk in chunks:
        pending += chunk
        if b"\r" in pending:
            if pending.endswith(b"\r"):  # maybe the first half of \r\n: wait for the next chunk
                continue
            pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, pending = pending.split(b"\n")
        for line in lines:
            event = block.feed(line)
            if event is not None:
                yield event
    for line in pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        event = block.feed(line)
        if event is not None:
            yield event
    if block.data:
        yield ServerSentEvent("\n".join(block.data), block.event or "message")


class _Block:
    """The event being read: its data lines and name."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.data: list[str] = []
        self.event = ""

    def feed(self, raw: bytes) -> ServerSentEvent | None:
        """Take one line; a blank line dispatches the block (if it carried data)."""
        if not raw:
            dispatched = ServerSentEvent("\n".join(self.data), self.event or "message") if self.data else None
            self.data, self.event = [], ""
            return dispatched
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        return None
