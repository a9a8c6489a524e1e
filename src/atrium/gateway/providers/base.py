"""Who a provider adapter talks to, kept apart from how (the wire format), plus what every HTTP adapter
shares: opening the upstream's stream, turning its failures into our errors, and (for chat adapters)
``provider``/``ready``/``aclose``.

A ``Provider`` is plain data: base URL, credentials, upstream model id, and the few things in which
deployments of one wire format differ (Azure puts the deployment in the path, wants an ``api-version``
query and an ``api-key`` header). The same wire-format adapter (e.g. ``OpenAIChatModel``) serves OpenAI,
Azure, Groq, vLLM, Ollama or the managed llama.cpp server by being given another ``Provider``; the HTTP
client is built once by the caller and injected next to it.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import httpx

from atrium.errors import (
    AppError,
    ContextLengthExceeded,
    GatewayError,
    ModelTimeout,
    ModelUnavailable,
    UpstreamRateLimited,
)
from atrium.gateway.http_client import PostForStream, StreamedResponse, post_for_stream
from atrium.gateway.ports import ChatRequest, ErrorEvent
from atrium.gateway.providers.sse import ServerSentEvent, server_sent_events
from atrium.telemetry.credentials import BEARER, CREDENTIAL_PATTERN, KEY_LIKE, SECRET_NAME

# How servers word "the prompt does not fit" when they send no machine-readable code (vLLM, Anthropic).
_CONTEXT_PATTERN = re.compile(r"(?i)maximum context length|context (?:length|window)|prompt is too long")

# Error kinds that another attempt cannot fix, even when they arrive inside a stream (no HTTP status).
_CALLER_FAULTS = ("invalid_request", "authentication", "permission", "billing")

MAX_ERROR_BODY = 64 * 1024
_IMAGE_TOKENS = 85
_MAX_MESSAGE = 300

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Provider:
    """Endpoint and credentials of one upstream.

    ``name`` labels the upstream in error messages and in ``Done.provider`` (never the URL, which may
    carry a key in its query). ``api_key`` is excluded from ``repr`` so it cannot end up in logs by accident.

    What varies between deployments of one wire format:

    * ``paths``: operation -> path template, e.g. ``{"chat/completions":
      "openai/deployments/{model}/chat/completions"}``; operations not listed use their own name as path.
      ``{model}`` is replaced by the (URL-quoted) upstream model id.
    * ``query``: parameters added to every URL (e.g. ``{"api-version": "2024-10-21"}``).
    * ``auth``: ``(header, prefix)`` carrying the key, e.g. ``("api-key", "")``; ``None`` lets the wire
      format choose (``Authorization: Bearer`` for OpenAI's, ``x-api-key`` for Anthropic's).
    * ``api_version``: a version the wire format pins in a header (Anthropic's ``anthropic-version``).
    """

    name: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, repr=False)
    paths: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    query: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    auth: tuple[str, str] | None = None
    api_version: str | None = None

    def url(self, operation: str) -> str:
        """The URL of ``operation`` (e.g. ``"chat/completions"``): ``base_url`` joined with the operation's
        path (``base_url`` is expected to end at ``/v1`` or equivalent), plus the ``query`` parameters."""
        path = self.paths.get(operation, operation).replace("{model}", quote(self.model, safe=""))
        url = f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"
        if self.query:
            url += ("&" if "?" in url else "?") + urlencode(dict(self.query))
        return url

    def request_headers(self, default_auth: tuple[str, str] = ("Authorization", "Bearer ")) -> dict[str, str]:
        """Headers for every request: the configured ones plus the key in ``auth`` (or the wire format's
        ``default_auth``) when a key is set."""
        headers = dict(self.headers)
        if self.api_key:
            header, prefix = self.auth or default_auth
            headers[header] = f"{prefix}{self.api_key}"
        return headers

    def redact(self, text: str) -> str:
        """``text`` without this provider's secrets (the API key, credential headers or query values) or
        key-like strings."""
        named = {**self.headers, **self.query}
        secrets = [value for name, value in named.items() if SECRET_NAME.search(name)]
        if self.api_key:
            secrets.append(self.api_key)
        for secret in secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        # Credential-looking strings an upstream may echo back (vendor and Atrium keys, bearer tokens).
        for pattern in (CREDENTIAL_PATTERN, KEY_LIKE, BEARER):
            text = pattern.sub("***", text)
        return text


def retry_after_seconds(headers: httpx.Headers | Mapping[str, str], *, now: float | None = None) -> float | None:
    """How long the upstream asked to wait, in seconds: ``retry-after-ms`` (OpenAI's, more precise), else
    ``Retry-After`` as seconds or as an HTTP date; ``None`` when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(lowered.get("retry-after-ms", "")) / 1000)
    value = lowered.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0.0, round(when - (time.time() if now is None else now), 3))
    return None


def upstream_error(
    provider: Provider,
    *,
    status: int | None,
    kind: str = "",
    detail: object = None,
    retry_after: float | None = None,
) -> GatewayError:
    """Map an upstream failure to one of our errors. ``status`` is the HTTP status (``None`` for an error
    sent inside a stream), ``kind`` the vendor's error type/code words (``"rate_limit_error"``,
    ``"invalid_request_error context_length_exceeded"``), ``detail`` its message (redacted, shortened, and
    left out on 401/403 where vendors echo the key)."""
    where = f"{provider.name} returned HTTP {status}" if status is not None else f"{provider.name} failed"
    text = where
    has_detail = isinstance(detail, str) and bool(detail)
    if status not in (401, 403) and isinstance(detail, str) and detail:
        text = f"{where}: {provider.redact(detail)[:_MAX_MESSAGE]}"
    kind = kind.lower()
    if "context_length_exceeded" in kind or (
        status in (None, 400) and has_detail and _CONTEXT_PATTERN.search(str(detail))
    ):
        return ContextLengthExceeded(text)
    if status == 429 or "rate_limit" in kind or "insufficient_quota" in kind:
        if retry_after is not None:
            text += f" (retry after {retry_after:g} s)"
        # An exhausted quota is a 429 too, but waiting a moment will not fix it.
        retryable = "insufficient_quota" not in kind
        return UpstreamRateLimited(text, retryable=retryable, retry_after=retry_after if retryable else None)
    if status in (408, 504) or "timeout" in kind:
        return ModelTimeout(text, retryable=True, retry_after=retry_after)
    if status in (503, 529) or "overloaded" in kind:
        return ModelUnavailable(text, retryable=True, retry_after=retry_after)
    if status == 404 or "not_found" in kind:
        return ModelUnavailable(text)
    if (status is None or status >= 500) and not any(word in kind for word in _CALLER_FAULTS):
        return GatewayError(text, retryable=True, retry_after=retry_after)
    return GatewayError(text)


class RemoteChatAdapter:
    """What a ChatModel adapter over a remote provider shares: its ``provider``, ``ready`` and ``aclose``
    (the client is the caller's: closing the adapter only makes its streams answer ``model_unavailable``)."""

    name: str
    _provider: Provider
    _closed: bool

    @property
    def provider(self) -> Provider:
        return self._provider

    async def ready(self) -> bool:
        """True until closed: a remote provider is not probed (``/ready`` must not spend API quota)."""
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True


class ErrorMapping(Protocol):
    """A wire format's reading of an error answer (its HTTP status and JSON body) as one of our errors."""

    def __call__(self, provider: Provider, payload: dict[str, Any], *, status: int | None,
                 retry_after: float | None = None) -> GatewayError: ...


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """An upstream's answer, open: ``whole`` is the JSON body of a non-streamed one (a non-streamed call,
    or an upstream that ignored ``stream: true``), else ``None`` and ``events`` are its server-sent events."""

    whole: bytes | None
    events: AsyncIterator[ServerSentEvent]


def open_stream(client: httpx.AsyncClient, provider: Provider, url: str, *, body: dict[str, Any],
                headers: Mapping[str, str], timeout: httpx.Timeout | None, error: ErrorMapping) -> UpstreamCall:
    """POST ``body`` to ``url``; inside the ``async with`` block the answer is open. An error status raises
    ``error``'s reading of it; a broken connection, then or while the block reads, raises
    :func:`transport_error`'s. Leaving the block early after reading every event puts the connection back
    in the pool."""
    return UpstreamCall(post_for_stream(client, url, json_body=body, headers=headers, timeout=timeout),
                        provider, error)


class UpstreamCall:
    """What :func:`open_stream` returns: an async context manager written as a class (every model call
    opens one; an ``@asynccontextmanager`` costs a generator and its helper object per call)."""

    __slots__ = ("_error", "_events", "_post", "_provider")

    def __init__(self, post: PostForStream, provider: Provider, error: ErrorMapping) -> None:
        self._post, self._provider, self._error = post, provider, error
        self._events: AsyncGenerator[ServerSentEvent, None] | None = None

    async def __aenter__(self) -> UpstreamAnswer:
        post = self._post
        try:
            response = await post.__aenter__()
            try:
                if response.status_code >= 400:
                    raise self._error(self._provider, await read_error_body(response), status=response.status_code,
                                      retry_after=retry_after_seconds(response.headers))
                if response.headers.get("content-type", "").startswith("application/json"):
                    return UpstreamAnswer(await response.aread(), _NO_EVENTS)
                self._events = server_sent_events(response.aiter_bytes())
                return UpstreamAnswer(None, self._events)
            except BaseException as exc:
                await post.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        except httpx.HTTPError as exc:
            raise transport_error(self._provider, exc) from exc

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        events, self._events = self._events, None
        try:
            try:
                if events is not None:
                    await events.aclose()
            except BaseException as closing:
                await self._post.__aexit__(type(closing), closing, closing.__traceback__)
                raise
            await self._post.__aexit__(exc_type, exc, traceback)
        except httpx.HTTPError as failure:
            raise transport_error(self._provider, failure) from failure
        if isinstance(exc, httpx.HTTPError):  # the block's own reading broke off
            raise transport_error(self._provider, exc) from exc


class _NoEvents:
    def __aiter__(self) -> _NoEvents:
        return self

    async def __anext__(self) -> ServerSentEvent:
        raise StopAsyncIteration


_NO_EVENTS = _NoEvents()


def transport_error(provider: Provider, exc: httpx.HTTPError) -> GatewayError:
    """A failure of the connection itself (no answer, refused, reset, cut): always worth another try."""
    if isinstance(exc, httpx.TimeoutException):
        return ModelTimeout(f"{provider.name} did not answer in time ({type(exc).__name__}).", retryable=True)
    if isinstance(exc, httpx.ConnectError):
        return ModelUnavailable(f"Cannot connect to {provider.name}.", retryable=True)
    return GatewayError(  # reset, protocol error, incomplete body
        f"The connection to {provider.name} broke off ({type(exc).__name__}).", retryable=True
    )


async def read_error_body(response: StreamedResponse) -> dict[str, Any]:
    """The JSON object of an error response (at most ``MAX_ERROR_BODY`` bytes read), ``{}`` if it is none."""
    raw = b""
    with contextlib.suppress(httpx.HTTPError):
        async for block in response.aiter_bytes():
            raw += block
            if len(raw) >= MAX_ERROR_BODY:
                break
    try:
        payload = json.loads(raw)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def plain_json(value: Any) -> Any:
    """``value`` with every mapping made a ``dict`` and every tuple a ``list``, ready for ``json.dumps``
    (requests hold read-only mappings and tuples)."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain_json(v) for v in value]
    return value


def approximate_prompt_tokens(request: ChatRequest) -> int:
    """A rough prompt size: ``ceil(chars / 4)`` per message (text, tool calls) + 4 tokens of per-message
    framing + 3 for the reply primer (the usual rule of thumb for BPE vocabularies on English text), a flat
    85 per image part (OpenAI's low-detail price) and the tool schemas' JSON at 4 characters a token."""
    total = 3
    for message in request.messages:
        chars = len(message.text) + sum(len(call.name) + len(call.arguments) for call in message.tool_calls)
        parts = () if isinstance(message.content, str) else message.content
        images = sum(1 for part in parts if part.get("type") != "text")
        total += 4 + math.ceil(chars / 4) + _IMAGE_TOKENS * images
    if request.tools:
        total += math.ceil(len(json.dumps(plain_json(request.tools))) / 4)
    return total


def error_event(exc: AppError, *, model: str, provider: str) -> ErrorEvent:
    """The terminal event for ``exc``, labelled with who failed."""
    return ErrorEvent(
        code=exc.code,
        message=exc.message,
        retryable=bool(getattr(exc, "retryable", False)),
        retry_after=getattr(exc, "retry_after", None),
        model=model,
        provider=provider,
    )
