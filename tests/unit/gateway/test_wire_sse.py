"""The shared server-sent-events reader: data, event names, comments, ignored fields, an unterminated tail."""

from __future__ import annotations

from collections.abc import AsyncIterator

from atrium.gateway.providers.sse import ServerSentEvent, server_sent_events


async def events_of(text: str) -> list[ServerSentEvent]:
    async def lines() -> AsyncIterator[str]:
        for line in text.split("\n"):
            yield line

    return [event async for event in server_sent_events(lines())]


async def test_data_event_names_comments_and_unterminated_tail() -> None:
    stream = (
        ": keep-alive\n"
        "data: one\n\n"
        "event: content_block_delta\ndata:{\"a\":\ndata: 1}\nid: 7\nretry: 10\n\n"
        "event: ping\n\n"  # no data: nothing dispatched, and the name does not leak into the next event
        "data: two\n\n"
        "event: error\ndata: tail"
    )
    assert await events_of(stream) == [
        ServerSentEvent("one"),
        ServerSentEvent('{"a":\n1}', "content_block_delta"),
        ServerSentEvent("two"),
        ServerSentEvent("tail", "error"),
    ]
