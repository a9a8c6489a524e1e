"""The upstream HTTP client's hot path (``post_for_stream`` on the production client)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from atrium.gateway.http_client import post_for_stream, upstream_http_client

ANSWER = b"data: [DONE]\n\n"


def _serve(listener: socket.socket, arrivals: list[float], heads: list[bytes], requests: int) -> None:
    """Answer ``requests`` POSTs on one keep-alive connection, noting when each had fully arrived and its
    head; every answer sets a cookie."""
    connection, _ = listener.accept()
    with connection:
        pending = b""
        for _ in range(requests):
            while b"\r\n\r\n" not in pending:
                pending += connection.recv(65536)
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(pending) < length:
                pending += connection.recv(65536)
            pending = pending[length:]
            arrivals.append(time.monotonic())
            heads.append(head.lower())
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                               b"set-cookie: session=tenant-a-secret; Path=/\r\n"
                               b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[float], list[bytes]]]:
    """A plain-socket upstream in a thread, so that it reads what is sent even while the loop is blocked."""
    listener = socket.create_server(("127.0.0.1", 0))
    arrivals: list[float] = []
    heads: list[bytes] = []
    server = threading.Thread(target=_serve, args=(listener, arrivals, heads, 2), daemon=True)
    server.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions", arrivals, heads
    server.join(5)
    listener.close()


async def test_a_call_goes_on_the_wire_before_the_event_loop_turns(
        upstream: tuple[str, list[float], list[bytes]]) -> None:
    """Under a burst of calls, each call's request must leave at once, not after every task already
    queued on the loop (aiohttp before Python 3.12 writes the body from a task of its own: with 50
    streams starting together that put 5-8 ms on the median time to first token)."""
    url, arrivals, _ = upstream
    async with upstream_http_client(httpx.Timeout(5.0)) as client:
        async with post_for_stream(client, url, json_body={"warm": "up"}, headers={}, timeout=None) as response:
            assert await response.aread() == ANSWER  # the connection is now in the pool
        # The rest of a burst: work queued on the loop before this call's request path runs.
        asyncio.get_running_loop().call_soon(time.sleep, 0.5)
        sent = time.monotonic()
        async with post_for_stream(client, url, json_body={"model": "m"}, headers={}, timeout=None) as response:
            assert response.status_code == 200 and await response.aread() == ANSWER
    assert len(arrivals) == 2
    assert arrivals[1] - sent < 0.25, f"the request arrived {arrivals[1] - sent:.3f} s after it was sent"


async def test_cookies_an_upstream_sets_are_never_sent_back(upstream: tuple[str, list[float], list[bytes]]) -> None:
    """The client is shared by every tenant's calls: a cookie from one call must not ride on the next."""
    url, _, heads = upstream
    url = url.replace("127.0.0.1", "localhost")  # a jar keeps no cookies of an IP address: use a name
    async with upstream_http_client(httpx.Timeout(5.0)) as client:
        for _ in range(2):
            async with post_for_stream(client, url, json_body={"model": "m"}, headers={}, timeout=None) as response:
                assert await response.aread() == ANSWER
    assert len(heads) == 2 and b"cookie:" not in heads[1], heads[1]
