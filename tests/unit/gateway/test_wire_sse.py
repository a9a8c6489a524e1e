"""The shared server-sent-events reader: data, event names, comments, ignored fields, an unterminated tail."""

from __future__ import annotations

from collections.abc import AsyncIterator

from atrium.gateway.providers.sse import ServerSentEvent, server_sent_events


async def events_of(text: str, *, size: int = 7, newline: str = "\n") -> list[ServerSentEvent]:
    """The events of ``text`` sent in ``size``-byte chunks (so lines, and \\r\\n pairs, are split across
    chunks), with ``newline`` as the line ending."""
    raw = text.replace("\n", newline).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), size):
            yield raw[start:start + size]

    return [event async for event in server_sent_events(chunks())]


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


async def test_every_line_ending_and_chunking_gives_the_same_events() -> None:
    stream = "data: one\n\nevent: e\ndata: tw\u00f6\ndata: three\n\n: ping\n\ndata: four\n\n"
    expected = [ServerSentEvent("one"), ServerSentEvent("tw\u00f6\nthree", "e"), ServerSentEvent("four")]
    for newline in ("\n", "\r\n", "\r"):
        for size in (1, 2, 3, 5, 64):
            assert await events_of(stream, size=size, newline=newline) == expected, (newline, size)
