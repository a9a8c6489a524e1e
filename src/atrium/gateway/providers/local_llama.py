"""The bundled local model: a ChatModel on llama.cpp's server, run by
:class:`~atrium.gateway.providers.llama_server.ManagedLlamaServer` (configured by its ``LlamaServerConfig``).

:class:`LocalChatModel` implements the ChatModel port by delegating to :class:`OpenAIChatModel` pointed at
the managed server, so llama.cpp and every OpenAI-format vendor share one adapter. llama.cpp's server does
not stream usage: completion tokens are the content deltas it streams (one per generated token), and the
exact prompt size is asked from its ``/extras/tokenize/count`` endpoint, with the prompt rendered as the
model's chat template does (ChatML for the bundled Qwen models), concurrently with the generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Literal

import httpx

from atrium.errors import ModelUnavailable
from atrium.gateway.local_models import LOCAL_MODELS
from atrium.gateway.ports import ChatEvent, ChatRequest, ErrorEvent
from atrium.gateway.providers.base import Provider
from atrium.gateway.providers.llama_server import ManagedLlamaServer
from atrium.gateway.providers.openai_format import OpenAIChatModel

__all__ = ["QWEN_DEFAULT_SYSTEM", "LocalChatModel", "chatml_prompt"]

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


class LocalChatModel:
    """ChatModel on the managed llama.cpp server, through the OpenAI-format adapter.

    The server starts on first use (``stream``), or when ``start`` or ``ready`` is called; a request waits
    up to ``ready_timeout_s`` for a (re)starting server. If the server dies mid-stream the stream ends with
    ``ErrorEvent(code="model_unavailable", retryable=True)`` and the supervisor restarts it for the next
    request. A prompt longer than the context ends with ``ErrorEvent(code="context_length_exceeded")``.
    ``request_timeout_s`` bounds each network wait (connect, and the gap between two chunks).
    ``prompt_renderer`` renders a request as the model's chat template does, for exact prompt token
    counts: ``"auto"`` uses ChatML for catalogue models and estimates otherwise, ``None`` always
    estimates. ``client`` defaults to the server's; ``aclose`` stops the server.
    """

    def __init__(
        self,
        server: ManagedLlamaServer,
        client: httpx.AsyncClient | None = None,
        *,
        name: str | None = None,
        ready_timeout_s: float = 60.0,
        request_timeout_s: float = 300.0,
        prompt_renderer: Callable[[ChatRequest], str] | Literal["auto"] | None = "auto",
    ) -> None:
        self.name = name or server.config.model
        self._server = server
        self._client = client or server.client
        self._ready_timeout_s = ready_timeout_s
        self._timeout = httpx.Timeout(request_timeout_s, connect=5.0)
        if prompt_renderer == "auto":
            prompt_renderer = chatml_prompt if server.config.model in LOCAL_MODELS else None
        self._render = prompt_renderer
        self._adapter: OpenAIChatModel | None = None
        self._adapter_url: str | None = None

    async def start(self) -> None:
        """Start the server now instead of on first use (e.g. in the app's lifespan)."""
        await self._server.start()

    async def ready(self) -> bool:
        """True when the server is up; starts it in the background if nothing has yet."""
        self._server.ensure_started()
        return self._server.is_healthy()

    async def aclose(self) -> None:
        await self._server.aclose()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Stream from the local server; see the class docstring for failure behaviour.

        A request that meets a server which died before sending anything (a crash not yet noticed) waits
        for the restart and is sent once more: nothing was streamed, so nothing is repeated.
        """
        for attempt in (1, 2):
            try:
                base_url = await self._server.wait_ready(self._ready_timeout_s)
            except ModelUnavailable as exc:  # the first line; the server's output is in the log
                yield ErrorEvent(code=exc.code, message=exc.message.split("\n", 1)[0], retryable=exc.retryable)
                return
            pid = self._server.pid
            streamed = False
            async with contextlib.aclosing(self._adapter_for(base_url).stream(request)) as events:
                async for event in events:
                    if isinstance(event, ErrorEvent) and await self._server.exited(pid):
                        if not streamed and attempt == 1:
                            break  # retry on the restarted server
                        event = ErrorEvent(
                            code="model_unavailable",
                            message="The local model server stopped during the request; it is being restarted.",
                            retryable=True,
                        )
                    elif isinstance(event, ErrorEvent) and not streamed:
                        # llama.cpp's server just drops the stream of a prompt longer than its context.
                        event = await self._context_overflow(request) or event
                    streamed = True
                    yield event
                else:
                    return

    async def _context_overflow(self, request: ChatRequest) -> ErrorEvent | None:
        if self._render is None:
            return None
        try:
            prompt_tokens = await self._count_prompt_tokens(request)
        except Exception:  # best effort: keep the original error
            return None
        n_ctx = self._server.config.context_size
        if prompt_tokens < n_ctx:
            return None
        return ErrorEvent(
            code="context_length_exceeded",
            message=f"The prompt has {prompt_tokens} tokens; the local model's context holds {n_ctx}.",
        )

    def _adapter_for(self, base_url: str) -> OpenAIChatModel:
        # A restarted server listens on a new port: build a new (cheap) adapter; the client is shared.
        if self._adapter is None or self._adapter_url != base_url:
            provider = Provider(name="local model server", base_url=base_url, model=self._server.config.model)
            counter = self._count_prompt_tokens if self._render is not None else None
            self._adapter = OpenAIChatModel(
                provider, self._client, name=self.name, timeout=self._timeout, prompt_token_counter=counter
            )
            self._adapter_url = base_url
        return self._adapter

    async def _count_prompt_tokens(self, request: ChatRequest) -> int:
        assert self._render is not None
        response = await self._client.post(
            f"{self._server.root_url}/extras/tokenize/count",
            json={"input": self._render(request), "model": self._server.config.model},
            timeout=self._timeout,
        )
        response.raise_for_status()
        count = response.json()["count"]
        if not isinstance(count, int):
            raise ValueError("tokenize/count returned no integer")
        return count


def chatml_prompt(request: ChatRequest, default_system: str | None = QWEN_DEFAULT_SYSTEM) -> str:
    """``request`` in ChatML as Qwen2.5's template renders it (adding ``default_system`` when the
    conversation has no system message), ending with the assistant header the reply follows."""
    parts: list[str] = []
    if default_system is not None and (not request.messages or request.messages[0].role != "system"):
        parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    parts.extend(f"<|im_start|>{m.role}\n{m.text}<|im_end|>\n" for m in request.messages)
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)
