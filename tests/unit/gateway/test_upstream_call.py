"""``open_stream`` (the adapters' shared base) on the production client: how an answer opens, and how a
failure while it is open becomes one of our errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from atrium.errors import GatewayError, UpstreamRateLimited
from atrium.gateway.http_client import upstream_http_client
from atrium.gateway.providers.base import Provider, open_stream
from atrium.gateway.providers.openai_format import openai_error

PROVIDER = Provider(name="up", base_url="http://upstream/v1", model="m")


def _answer_once(listener: socket.socket, raw: bytes) -> None:
    """Read one request, send ``raw`` and close the connection."""
    connection, _ = listener.accept()
    with connection:
        pending = b""
        while b"\r\n\r\n" not in pending:
            pending += connection.recv(65536)
        connection.sendall(raw)


@pytest.fixture
def answering() -> Iterator[Callable[[bytes], str]]:
    """``serve(raw)`` -> the URL of a one-shot upstream answering ``raw``."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def serve(raw: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        thread = threading.Thread(target=_answer_once, args=(listener, raw), daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"

    yield serve
    for thread in threads:
        thread.join(5)
    for listener in listeners:
        listener.close()


async def _read(url: str) -> tuple[bytes | None, list[str]]:
    async with upstream_http_client(httpx.Timeout(5.0)) as client, \
            open_stream(client, PROVIDER, url, body={"model": "m"}, headers={}, timeout=None,
                         error=openai_error) as answer:
        return answer.whole, [event.data async for event in answer.events]


async def test_a_whole_answer_and_a_stream_open(answering: Callable[[bytes], str]) -> None:
    body = b'{"ok": true}'
    url = answering(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(body), body))
    assert await _read(url) == (body, [])
    events = b"data: one\n\ndata: [DONE]\n\n"
    url = answering(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(events), events))
    assert await _read(url) == (None, ["one", "[DONE]"])


async def test_an_error_status_is_the_wire_formats_error(answering: Callable[[bytes], str]) -> None:
    body = b'{"error": {"type": "rate_limit_error", "message": "slow down"}}'
    url = answering(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 3\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body))
    with pytest.raises(UpstreamRateLimited) as raised:
        await _read(url)
    assert raised.value.retry_after == 3


async def test_a_connection_cut_while_the_block_reads_is_a_retryable_error(answering: Callable[[bytes], str]) -> None:
    # Promises 1,000 bytes of events, sends one event and closes: the break comes inside the block.
    url = answering(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 1000\r\n\r\n"
                    b"data: one\n\n")
    with pytest.raises(GatewayError) as raised:
        await _read(url)
    assert raised.value.retryable
    assert "broke off" in raised.value.message and "up" in raised.value.message
    assert not isinstance(raised.value.__cause__, GatewayError)  # mapped from the transport's exception
