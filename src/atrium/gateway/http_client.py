"""The HTTP client every upstream adapter is given: httpx's API over aiohttp's connection pool.

The adapters speak httpx (one API for streaming, timeouts and errors); the transport underneath is
aiohttp's (``httpx-aiohttp``), which costs a fraction of httpx's own per request (measured in
bench/gateway_cpu_per_request.py). Build one per process and share it.

``httpx-aiohttp`` maps aiohttp's errors coarsely (a refused connection or a reset becomes a
``ConnectTimeout``); :class:`_Transport` maps them again from their cause, so adapters can tell "cannot
connect" from "timed out" from "the connection broke".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def upstream_http_client(timeout: httpx.Timeout, *, max_connections: int = 500,
                         max_keepalive_connections: int = 100) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections)
    client = httpx.AsyncClient(transport=_Transport(limits=limits), timeout=timeout)
    # Model APIs do not use cookies; httpx would parse every response for them (~13 us a call).
    client._cookies = _NoCookies()  # httpx offers no switch for this
    return client


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def _precise(exc: httpx.TransportError) -> httpx.TransportError:
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(cause))
    if isinstance(cause, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(str(cause))
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause))
    if isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(cause) or type(cause).__name__)
    if isinstance(cause, aiohttp.ClientConnectionError):
        return httpx.ReadError(str(cause) or type(cause).__name__)
    return exc


@contextlib.contextmanager
def _remapped() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        precise = _precise(exc)
        if precise is exc:
            raise
        raise precise from exc.__cause__


class _Stream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _remapped():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        with _remapped():
            await self._inner.aclose()


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _remapped():
            response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Stream(response.stream)
        return response
