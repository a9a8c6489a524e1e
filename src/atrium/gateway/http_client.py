"""The HTTP client every upstream adapter is given: httpx's API over aiohttp's connection pool.

The adapters speak httpx (one API for streaming, timeouts and errors); the transport underneath is
aiohttp's (``httpx-aiohttp``), which costs a fraction of httpx's own per request (measured in
bench/gateway_cpu_per_request.py). Build one per process and share it.

The model call itself, the hot path, goes through :func:`post_for_stream`: on this client it asks
aiohttp's session directly, without building httpx's request and response objects around aiohttp's
(about 0.1 ms per call and a few microseconds per streamed chunk); on any other httpx client it is
``client.stream("POST", ...)``. Either way errors arrive as httpx's exceptions.

``httpx-aiohttp`` maps aiohttp's errors coarsely (a refused connection or a reset becomes a
``ConnectTimeout``); :class:`_Transport` maps them again from their cause, so adapters can tell "cannot
connect" from "timed out" from "the connection broke".
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def upstream_http_client(timeout: httpx.Timeout, *, max_connections: int = 500,
                         max_keepalive_connections: int = 100) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections)
    client = UpstreamClient(transport=_Transport(limits=limits), timeout=timeout)
    # Model APIs do not use cookies; httpx would parse every response for them (~13 us a call).
    client._cookies = _NoCookies()  # httpx offers no switch for this
    return client


class UpstreamClient(httpx.AsyncClient):
    """An httpx client over aiohttp whose session :func:`post_for_stream` may use directly."""

    _transport: _Transport

    def __init__(self, *, transport: _Transport, timeout: httpx.Timeout) -> None:
        super().__init__(transport=transport, timeout=timeout)
        # A proxy from the environment (HTTPS_PROXY, ...) is mounted as its own httpx transport; calls then
        # go through httpx so that it applies.
        self.direct = not self._mounts

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session under the transport (created on first use, inside the event loop)."""
        transport = self._transport
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        return transport.client


class StreamedResponse(Protocol):
    """What an adapter reads of an upstream response (``httpx.Response`` has it too)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...


def post_for_stream(client: httpx.AsyncClient, url: str, *, json_body: Any, headers: Mapping[str, str],
                    timeout: httpx.Timeout | None) -> PostForStream:
    """POST ``json_body`` to ``url``; the response is open (its body unread) inside the ``async with`` block
    and released after it (to the pool when the body was read to its end). Raises httpx's exceptions."""
    return PostForStream(client, url, json_body, headers, timeout)


class PostForStream:
    """What :func:`post_for_stream` returns: an async context manager written as a class (every model call
    opens one; an ``@asynccontextmanager`` costs a generator and its helper object per call)."""

    __slots__ = ("_client", "_direct", "_headers", "_inner", "_json_body", "_timeout", "_url")

    def __init__(self, client: httpx.AsyncClient, url: str, json_body: Any, headers: Mapping[str, str],
                 timeout: httpx.Timeout | None) -> None:
        self._client, self._url, self._json_body = client, url, json_body
        self._headers, self._timeout = headers, timeout
        self._direct = isinstance(client, UpstreamClient) and client.direct
        self._inner: contextlib.AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> StreamedResponse:
        client, timeout = self._client, self._timeout
        if not self._direct:
            self._inner = client.stream("POST", self._url, json=self._json_body, headers=self._headers,
                                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            response: httpx.Response = await self._inner.__aenter__()
            return response
        assert isinstance(client, UpstreamClient)
        content = json.dumps(self._json_body, ensure_ascii=False, separators=(",", ":")).encode()
        bounds = timeout if timeout is not None else client.timeout
        try:
            self._inner = inner = client.session().post(
                self._url, data=content, headers={"content-type": "application/json", **self._headers},
                timeout=aiohttp.ClientTimeout(sock_connect=bounds.connect, sock_read=bounds.read,
                                              connect=bounds.pool),
                allow_redirects=False,
            )
            return _AiohttpResponse(await inner.__aenter__())
        except Exception as exc:
            _raise_translated(exc)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        inner = self._inner
        if inner is None:
            return
        self._inner = None
        if not self._direct:
            await inner.__aexit__(exc_type, exc, traceback)
            return
        try:
            await inner.__aexit__(exc_type, exc, traceback)
        except Exception as error:
            _raise_translated(error)
        if isinstance(exc, Exception):  # what the block raised, as httpx's exception when it is aiohttp's
            mapped = _httpx_error(exc)
            if mapped is not None:
                raise mapped from exc


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        with _translated():
            async for block in self._response.content.iter_any():
                yield block

    async def aread(self) -> bytes:
        with _translated():
            return await self._response.read()


def _httpx_error(exc: BaseException) -> httpx.TransportError | None:
    """httpx's exception for an aiohttp (or timeout) error; ``None`` for anything else."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc))
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return httpx.ReadError(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(str(exc))
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(str(exc) or type(exc).__name__)
    return None


def _raise_translated(exc: Exception) -> NoReturn:
    mapped = _httpx_error(exc)
    if mapped is None:
        raise exc
    raise mapped from exc


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        _raise_translated(exc)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def _precise(exc: httpx.TransportError) -> httpx.TransportError:
    mapped = _httpx_error(exc.__cause__) if exc.__cause__ is not None else None
    # httpx-aiohttp's own mapping stands for what is not a connection error (an invalid URL, say).
    precise = httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
    return mapped if isinstance(mapped, precise) else exc


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


_EAGER_TASKS = sys.version_info >= (3, 12)  # aiohttp then starts its body-writing task eagerly itself


class _WriteAtOnceRequest(aiohttp.ClientRequest):
    """A request whose in-memory body goes on the wire inside ``send``, in the caller's task.

    Before Python 3.12 (no eager tasks) aiohttp writes every body from a task of its own, and that task
    runs only after everything already queued on the event loop. Under a burst of calls that is after every
    other call's request path: with 50 streams starting together (bench/gateway_ttft.py) requests reached
    the upstream 5-8 ms late at the median, 0.2 ms with this class. A bytes body is written right after the
    headers (which aiohttp sends at once when it has no body to wait for); a 100-continue, chunked or
    compressed body, or a transport whose writing is paused takes aiohttp's own path.
    """

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        body, transport, protocol = self._body, conn.transport, conn.protocol
        if (_EAGER_TASKS or type(body) is not aiohttp.BytesPayload or self._continue is not None or self.chunked
                or self.compress or transport is None or protocol is None or protocol.writing_paused):
            return await super().send(conn)
        content = await body.as_bytes()
        self._body = None
        try:
            response = await super().send(conn)
        finally:
            self._body = body
        transport.write(content)
        return response


class _Transport(AiohttpTransport):
    def get_client(self) -> aiohttp.ClientSession:
        """httpx-aiohttp's session, with :class:`_WriteAtOnceRequest` for its requests and no cookie jar:
        the session serves every tenant's calls, so a cookie one upstream answer set (a CDN's, say) must
        not ride on the next call; model APIs do not need cookies (and the jar cost 10-20 us a call)."""
        connector = aiohttp.TCPConnector(
            keepalive_timeout=self.limits.keepalive_expiry, ssl=self.ssl_context,
            local_addr=(self.local_address, 0) if self.local_address else None,
            limit=self.limits.max_connections or 0)
        return aiohttp.ClientSession(connector=connector, request_class=_WriteAtOnceRequest,
                                     cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _remapped():
            response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Stream(response.stream)
        return response
