"""A real HTTP upstream on 127.0.0.1 for gateway tests, speaking OpenAI's, Azure OpenAI's and Anthropic's
wire formats, with fault injection.

It runs on raw asyncio streams in the test's event loop (no threads), so it can misbehave at the byte
level: reset the connection, stop mid-body, stall. Routes:

``POST /v1/chat/completions``                        OpenAI chat completions (streamed, or not if ``stream``
                                                     is false)
``POST /openai/deployments/{d}/chat/completions``    Azure: the same, model = deployment ``d``; needs the
                                                     ``api-version`` query (400 without) and an ``api-key``
                                                     header (401 without)
``POST /v1/messages``                                Anthropic Messages (streamed or not); needs
                                                     ``x-api-key`` (401) and ``anthropic-version`` (400),
                                                     checks ``max_tokens``, roles and alternation (400)
``POST /v1/embeddings``, ``/openai/deployments/{d}/embeddings``
                                                     embeddings: deterministic bag-of-words hash vectors (not
                                                     unit length), ``dimensions`` honoured (default 64),
                                                     ``encoding_format: base64`` too, usage in words; an empty
                                                     input string is a 400, as at OpenAI
``GET /v1/models``                                   the model list (Anthropic's shape when the request
                                                     carries ``anthropic-version``)

The request's model picks the behaviour, with the same names on every route where they make sense:

``ok`` (any unknown name too)  the answer, word by word, with pings in between; usage (OpenAI: when
                               ``stream_options.include_usage`` is set); ``stop`` sequences and
                               ``max_tokens`` honoured (finish ``stop``/``length``)
``no-usage``                   OpenAI: the same, never any usage (embeddings too)
``json``, ``json-<model>``     a non-streamed answer despite ``stream: true`` (``json-tool``: the tool call)
``tool`` / ``tool-2``          one / two tool calls of the request's first tool (else ``get_weather``) with
                               arguments :data:`TOOL_ARGUMENTS`, streamed in pieces (OpenAI:
                               ``delta.tool_calls``; Anthropic: a text block, then ``tool_use`` blocks with
                               ``input_json_delta``s); finish ``tool_calls`` / ``tool_use``
``context-too-long``           400: OpenAI's ``context_length_exceeded``; Anthropic's "prompt is too long"
``status-<code>``              that HTTP status with the format's error body (401 echoes the key, as some
                               vendors do, to check that it never reaches an error message; 429 sends
                               ``Retry-After: 1``; Anthropic's 529 is ``overloaded_error``)
``quota``                      OpenAI: 429 ``insufficient_quota``; Anthropic: 400 ``billing_error``
``rate-limited-ms``            429 with ``retry-after-ms: 1500`` and ``Retry-After: 2``
``rate-limited-date``          429 with ``Retry-After`` as an HTTP date 3 s ahead
``slow-<ms>``                  waits that long before the response headers, then answers like ``ok``
``fail-first-<n>``             the first ``n`` requests for that model name get 503, later ones ``ok``
``stall``                      one token, then silence (embeddings: silence before the headers)
``reset``                      two tokens, then a TCP reset (embeddings: reset before any answer)
                               (OpenAI non-streamed, also ``cut-*``: the JSON body stops half-way)
``cut-chunked``                two tokens, then the connection closes inside the chunked body
``cut-eof``                    two tokens, then a clean close of an EOF-delimited body (no end marker)
``malformed``                  one token, then an event that is not JSON (embeddings: a broken body)
``error-payload``              one token, then an error inside the stream (OpenAI: ``data: {"error": ...}``
                               server_error; Anthropic: ``event: error`` ``overloaded_error``)
``done-without-finish``        OpenAI: the answer, then ``[DONE]`` without any ``finish_reason``
``no-message-stop``            Anthropic: everything up to ``message_delta``, then the body ends
``finish-then-eof``            the complete answer in an EOF-delimited body, then a clean close (OpenAI:
                               no ``[DONE]``)

``fail_rate``/``cut_rate`` (with ``seed``) make ``ok``-like requests fail at random: a 503 before the
headers, or a ``cut-chunked`` stream. ``requests`` records every request; ``count(model)`` says how many
requests named that model (requests refused before the model is looked at, e.g. a missing header, are not
counted).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import itertools
import json
import random
import re
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_ANSWER = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
TOOL_ARGUMENT_PIECES = ('{"city": ', '"Paris", "unit"', ': "celsius"}')
TOOL_PREAMBLE = "Let me check."
MODELS = ("ok", "no-usage", "json", "tool", "tool-2")

_AZURE = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|embeddings)")
_ROUTES = {"/v1/chat/completions": "chat", "/v1/messages": "messages", "/v1/embeddings": "embeddings"}
_NAMED_FAULTS = frozenset({"stall", "reset", "cut-chunked", "cut-eof", "malformed", "error-payload",
                           "done-without-finish", "no-message-stop", "finish-then-eof"})
_ERROR_MODES = ("status-", "context-too-long", "quota", "rate-limited-")
_HEAD = {"reset": 2, "cut-chunked": 2, "cut-eof": 2, "malformed": 1, "error-payload": 1}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    500: "api_error", 504: "timeout_error", 529: "overloaded_error"}  # fmt: skip
_FINISH = {"stop": ("stop", "end_turn"), "length": ("length", "max_tokens"), "stop_sequence": ("stop", "stop_sequence")}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]


class FaultUpstream:
    """The upstream server (an async context manager); see the module docstring for routes and models."""

    def __init__(self, answer: str = DEFAULT_ANSWER, token_delay: float = 0.0, *, fail_rate: float = 0.0,
                 cut_rate: float = 0.0, seed: int = 0, embedding_dimensions: int = 64) -> None:
        self.answer = answer
        self.token_delay = token_delay
        self.fail_rate = fail_rate
        self.cut_rate = cut_rate
        self.embedding_dimensions = embedding_dimensions
        self.requests: list[RecordedRequest] = []
        self._rng = random.Random(seed)
        self._counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._port = 0

    @property
    def root_url(self) -> str:
        """Where Anthropic's and Azure's base URLs point (they add ``/v1/...`` or ``/openai/...``)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """An OpenAI-style base URL (ends at ``/v1``)."""
        return f"{self.root_url}/v1"

    def count(self, model: str) -> int:
        """How many requests named ``model`` (Azure: as deployment)."""
        return self._counts[model]

    async def __aenter__(self) -> FaultUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for handler in list(self._handlers):
                handler.cancel()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, *_ = lines[0].split(" ")
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                url = urlsplit(target)
                request = RecordedRequest(method, url.path, dict(parse_qsl(url.query)), headers,
                                          body if isinstance(body, dict) else {})
                self.requests.append(request)
                if not await self._respond(writer, request, valid_json=isinstance(body, dict)):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, request: RecordedRequest, *, valid_json: bool) -> bool:
        """Write one response; False when the connection must not be reused."""
        route, model = _route(request)
        if route == "models":
            return await _send_json(writer, 200, _model_list("anthropic-version" in request.headers))
        if route is None:
            return await _send_json(writer, 404, {"error": {"message": "Not found", "type": "not_found", "code": None}})
        anthropic = route == "messages"
        problem = _request_problem(route, request) if valid_json else (400, "The body is not a JSON object.")
        if problem is not None:
            return await _send_error(writer, anthropic, problem[0], "", problem[1])
        self._counts[model] += 1
        mode = model
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.removeprefix("slow-")) / 1000)
            mode = "ok"
        if model.startswith("fail-first-"):
            if self._counts[model] <= int(model.removeprefix("fail-first-")):
                return await _send_error(writer, anthropic, 503, "", "upstream says 503")
            mode = "ok"
        streamed = bool(request.body.get("stream"))
        if mode == "json" or mode.startswith("json-"):
            mode, streamed = mode.removeprefix("json").removeprefix("-") or "ok", False
        if mode.startswith(_ERROR_MODES):
            return await _send_fault(writer, anthropic, mode, request.headers)
        if mode not in _NAMED_FAULTS:
            fail, cut = self._rng.random() < self.fail_rate, self._rng.random() < self.cut_rate
            if fail:
                return await _send_error(writer, anthropic, 503, "", "upstream says 503 (random)")
            if cut and route != "embeddings":
                mode = "cut-chunked"
        if route == "embeddings":
            return await self._embeddings(writer, request.body, mode)
        if anthropic:
            return await self._anthropic(writer, request.body, mode, streamed)
        return await self._openai_chat(writer, request.body, mode, streamed)

    def _words(self, max_tokens: object, stop: object) -> tuple[list[str], str]:
        """The answer's words (cut at the first stop sequence, then at ``max_tokens``), and why it ended."""
        text, finish = self.answer, "stop"
        for sequence in [stop] if isinstance(stop, str) else stop or []:
            if isinstance(sequence, str) and sequence and sequence in text:
                text, finish = text[: text.index(sequence)], "stop_sequence"
        words = [word for word in _split(text) if word]
        limit = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else len(words)
        return words[:limit], "length" if len(words) > limit else finish

    # -- OpenAI --------------------------------------------------------------------------------------

    async def _openai_chat(self, writer: asyncio.StreamWriter, body: dict[str, Any], mode: str, streamed: bool) -> bool:
        words, finish = self._words(body.get("max_tokens"), body.get("stop"))
        finish_reason = _FINISH[finish][0]
        calls = _tool_calls(mode, body, "call_")
        completion = len(TOOL_ARGUMENT_PIECES) * len(calls) if calls else len(words)
        usage = {"prompt_tokens": _prompt_words(body), "completion_tokens": completion,
                 "total_tokens": _prompt_words(body) + completion}
        if not streamed and mode in _CUT_MODES:
            return await _send_cut_json(writer)
        if not streamed:
            if self.token_delay:  # a non-streamed answer arrives when the whole generation is done
                await asyncio.sleep(self.token_delay * len(words))
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else "".join(words)}
            if calls:
                message["tool_calls"] = [{"id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": TOOL_ARGUMENTS}}
                                         for call_id, name in calls]  # fmt: skip
            return await _send_json(writer, 200, {
                "id": "c1", "object": "chat.completion", "created": 0, "model": mode, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else finish_reason,
                             "message": message}],
            })  # fmt: skip

        out = _Body(writer, chunked=mode not in ("cut-eof", "finish-then-eof"))
        await out.start()

        async def event(payload: object) -> None:
            await out.send(f"data: {json.dumps(payload)}\n\n")

        await event(_chunk({"role": "assistant", "content": ""}, None))
        if calls:
            for index, (call_id, name) in enumerate(calls):
                await event(_chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                                    "function": {"name": name, "arguments": ""}}]}, None))
                for piece in TOOL_ARGUMENT_PIECES:
                    await event(_chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None))
            words, finish_reason = [], "tool_calls"
        if mode == "stall":
            await event(_chunk({"content": words[0]}, None))
            await asyncio.sleep(30)
            return False
        head = _HEAD.get(mode)
        for index, word in enumerate(words[:head] if head else words):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if index % 3 == 1:
                await out.send(": ping - keep-alive\n\n")
            await out.send(f"data:{json.dumps(_chunk({'content': word}, None))}\n\n")  # no space after "data:"
        if mode == "reset":
            return out.reset()
        if mode in ("cut-chunked", "cut-eof"):
            return out.cut()
        if mode == "malformed":
            await out.send('data: {"id": "c1", "choices": [{"delta": {"content": "x"\n\n')
        elif mode == "error-payload":
            await event({"error": {"message": "The server had an error", "type": "server_error"}})
        else:
            if mode != "done-without-finish":
                await event(_chunk({}, finish_reason))
            if mode != "no-usage" and (body.get("stream_options") or {}).get("include_usage"):
                await event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            if mode == "finish-then-eof":
                return out.cut()
        await out.send("data: [DONE]\n\n")
        return await out.finish()

    # -- Anthropic -----------------------------------------------------------------------------------

    async def _anthropic(self, writer: asyncio.StreamWriter, body: dict[str, Any], mode: str, streamed: bool) -> bool:
        words, finish = self._words(body.get("max_tokens"), body.get("stop_sequences"))
        stop_reason = _FINISH[finish][1]
        present = [s for s in body.get("stop_sequences") or [] if isinstance(s, str) and s and s in self.answer]
        # The sequence that ended the answer: the one that occurs first in it.
        stop_sequence = min(present, key=self.answer.index) if finish == "stop_sequence" and present else None
        calls = _tool_calls(mode, body, "toolu_")
        prompt = _prompt_words(body)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": str(body.get("model")),
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": prompt, "output_tokens": 1}}  # fmt: skip
        if not streamed:
            content: list[dict[str, Any]] = [{"type": "text", "text": TOOL_PREAMBLE if calls else "".join(words)}]
            content += [{"type": "tool_use", "id": call_id, "name": name, "input": json.loads(TOOL_ARGUMENTS)}
                        for call_id, name in calls]  # fmt: skip
            output = len(TOOL_ARGUMENT_PIECES) * len(calls) + 3 if calls else len(words)
            return await _send_json(writer, 200, {**message, "content": content,
                                                  "stop_reason": "tool_use" if calls else stop_reason,
                                                  "stop_sequence": stop_sequence,
                                                  "usage": {"input_tokens": prompt, "output_tokens": output}})

        output = len(words)
        out = _Body(writer, chunked=mode not in ("cut-eof", "finish-then-eof"))
        await out.start()

        async def event(kind: str, payload: dict[str, Any]) -> None:
            await out.send(f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n")

        await event("message_start", {"message": message})
        await event("ping", {})
        if calls:
            await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            await event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": TOOL_PREAMBLE}})
            await event("content_block_stop", {"index": 0})
            for index, (call_id, name) in enumerate(calls, start=1):
                block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
                await event("content_block_start", {"index": index, "content_block": block})
                for piece in TOOL_ARGUMENT_PIECES:
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    await event("content_block_delta", {"index": index, "delta": delta})
                await event("content_block_stop", {"index": index})
            output, stop_reason = len(TOOL_ARGUMENT_PIECES) * len(calls) + 3, "tool_use"
        else:
            await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            if mode == "stall":
                await event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": words[0]}})
                await asyncio.sleep(30)
                return False
            head = _HEAD.get(mode)
            for index, word in enumerate(words[:head] if head else words):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if index % 3 == 1:
                    await event("ping", {})
                await event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}})
            if mode == "reset":
                return out.reset()
            if mode in ("cut-chunked", "cut-eof"):
                return out.cut()
            if mode == "malformed":
                await out.send('event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0\n\n')
                return await out.finish()
            if mode == "error-payload":
                await event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                return await out.finish()
            await event("content_block_stop", {"index": 0})
        await event("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                      "usage": {"output_tokens": output}})
        if mode != "no-message-stop":
            await event("message_stop", {})
        if mode == "finish-then-eof":
            return out.cut()
        return await out.finish()

    # -- embeddings ----------------------------------------------------------------------------------

    async def _embeddings(self, writer: asyncio.StreamWriter, body: dict[str, Any], mode: str) -> bool:
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return await _send_error(writer, False, 400, "invalid_request_error",
                                     "'$.input' is invalid. Please check the API reference.")
        if mode == "stall":
            await asyncio.sleep(30)
            return False
        if mode == "reset":
            return _Body(writer, chunked=False).reset()
        if mode == "malformed":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
                         b'{"data": [')
            await writer.drain()
            return True
        dimensions = body.get("dimensions") or self.embedding_dimensions
        rows = [embedding_of(text, dimensions) for text in texts]
        base64_format = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(struct.pack(f"<{len(row)}f", *row)).decode() if base64_format
                 else row} for i, row in enumerate(rows)]  # fmt: skip
        words = sum(len(text.split()) for text in texts)
        usage = None if mode == "no-usage" else {"prompt_tokens": words, "total_tokens": words}
        return await _send_json(writer, 200, {"object": "list", "data": data, "model": str(body.get("model")),
                                              **({"usage": usage} if usage else {})})


def embedding_of(text: str, dimensions: int) -> list[float]:
    """The upstream's vector for ``text``: lower-cased words hashed into ``dimensions`` signed buckets,
    scaled by 3 (an adapter must normalise it)."""
    row = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()) or [text]:
        digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        row[digest % dimensions] += 3.0 if digest >> 63 else -3.0
    if not any(row):
        row[0] = 3.0
    return row


class _Body:
    """One response body: chunked, or delimited by closing the connection."""

    def __init__(self, writer: asyncio.StreamWriter, *, chunked: bool) -> None:
        self.writer = writer
        self.chunked = chunked

    async def start(self) -> None:
        self.writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + (b"Transfer-Encoding: chunked\r\n\r\n" if self.chunked else b"Connection: close\r\n\r\n")
        )

    async def send(self, text: str) -> None:
        data = text.encode()
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if self.chunked else data)
        await self.writer.drain()

    async def finish(self) -> bool:
        if not self.chunked:
            return self.cut()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        return True

    def reset(self) -> bool:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        return False

    def cut(self) -> bool:
        self.writer.transport.close()
        return False


def _route(request: RecordedRequest) -> tuple[str | None, str]:
    if request.method == "GET" and request.path == "/v1/models":
        return "models", ""
    if request.method != "POST":
        return None, ""
    azure = _AZURE.fullmatch(request.path)
    if azure:
        return ("chat" if azure[2] == "chat/completions" else "embeddings"), unquote(azure[1])
    return _ROUTES.get(request.path), str(request.body.get("model", "ok"))


def _request_problem(route: str, request: RecordedRequest) -> tuple[int, str] | None:
    """What the real service would refuse before looking at the model."""
    headers, body = request.headers, request.body
    if request.path.startswith("/openai/"):
        if "api-version" not in request.query:
            return 400, "Missing API version."
        if "api-key" not in headers:
            return 401, "Access denied due to missing subscription key."
    if route != "messages":
        return None
    if "x-api-key" not in headers and "authorization" not in headers:
        return 401, "x-api-key header is required"
    if "anthropic-version" not in headers:
        return 400, "anthropic-version: header is required"
    if not isinstance(body.get("max_tokens"), int):
        return 400, "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "messages: Field required"
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if any(role not in ("user", "assistant") for role in roles):
        return 400, "messages: Unexpected role. Use the top-level system parameter for a system prompt."
    if any(a == b for a, b in itertools.pairwise(roles)):
        return 400, "messages: roles must alternate between user and assistant"
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
        return 400, "temperature: must be between 0 and 1"
    return None


async def _send_fault(writer: asyncio.StreamWriter, anthropic: bool, mode: str, headers: dict[str, str]) -> bool:
    if mode == "context-too-long":
        if anthropic:
            return await _send_error(writer, True, 400, "invalid_request_error",
                                     "prompt is too long: 12 tokens > 8 maximum")
        return await _send_error(writer, False, 400, "invalid_request_error",
                                 "This model's maximum context length is 8 tokens.", code="context_length_exceeded")
    if mode == "quota":
        if anthropic:
            return await _send_error(writer, True, 400, "billing_error", "Your credit balance is too low.")
        return await _send_error(writer, False, 429, "insufficient_quota", "You exceeded your current quota.",
                                 code="insufficient_quota")
    if mode == "rate-limited-ms":
        return await _send_error(writer, anthropic, 429, "", "slow down",
                                 extra="retry-after-ms: 1500\r\nRetry-After: 2\r\n")
    if mode == "rate-limited-date":
        date = email.utils.formatdate(time.time() + 3, usegmt=True)
        return await _send_error(writer, anthropic, 429, "", "slow down", extra=f"Retry-After: {date}\r\n")
    status = int(mode.removeprefix("status-"))
    key = next((headers[h] for h in ("x-api-key", "api-key", "authorization") if h in headers), "")
    key = key.removeprefix("Bearer ")
    message = f"Incorrect API key provided: {key}" if status == 401 else f"upstream says {status}"
    return await _send_error(writer, anthropic, status, "test_error", message,
                             extra="Retry-After: 1\r\n" if status == 429 else "")


async def _send_error(writer: asyncio.StreamWriter, anthropic: bool, status: int, kind: str, message: str, *,
                      code: str | None = None, extra: str = "") -> bool:
    """An error in the format's shape; Anthropic's type follows the status unless ``kind`` is one of its own."""
    if anthropic:
        kind = kind if kind.endswith("_error") and kind != "test_error" else _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error")
        return await _send_json(writer, status, {"type": "error", "error": {"type": kind, "message": message}}, extra)
    kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
    return await _send_json(writer, status, {"error": {"message": message, "type": kind, "code": code}}, extra)


_CUT_MODES = ("reset", "cut-chunked", "cut-eof")


async def _send_cut_json(writer: asyncio.StreamWriter) -> bool:
    """A non-streamed answer cut off: the headers promise more body than ever comes, then the connection
    closes."""
    part = b'{"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assist'
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(part) * 3}\r\n"
                 "\r\n".encode() + part)
    await writer.drain()
    return False


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: object, extra_headers: str = "") -> bool:
    data = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                 f"{extra_headers}\r\n".encode() + data)
    await writer.drain()
    return True


def _model_list(anthropic: bool) -> dict[str, Any]:
    if anthropic:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
        return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fault-upstream"}
                                       for m in MODELS]}  # fmt: skip


def _tool_calls(mode: str, body: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    """``(id, name)`` of the calls the ``tool`` models make: the request's tools in turn, else get_weather."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    names = [tool.get("name") or (tool.get("function") or {}).get("name") for tool in tools] or ["get_weather"]
    return [(f"{prefix}{i + 1}", str(names[i % len(names)])) for i in range({"tool": 1, "tool-2": 2}.get(mode, 0))]


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _split(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0], *(f" {word}" for word in parts[1:])]


def _prompt_words(body: dict[str, Any]) -> int:
    """Words of the prompt: message texts (strings or text blocks) plus Anthropic's ``system``."""

    def words(content: object) -> int:
        if isinstance(content, str):
            return len(content.split())
        if isinstance(content, list):
            return sum(words(block.get("text") or block.get("content")) for block in content
                       if isinstance(block, dict))  # fmt: skip
        return 0

    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    return words(body.get("system")) + sum(words(m.get("content")) for m in messages)
