"""A real OpenAI-format HTTP upstream on 127.0.0.1 for gateway tests, with fault injection.

It runs on raw asyncio streams in the test's event loop (no threads), so it can misbehave at the byte
level: reset the connection, stop mid-body, stall. The request's ``model`` picks the behaviour:

``ok`` (any unknown name too)  the answer, word by word, with ``: ping`` comments in between; usage when
                               ``stream_options.include_usage`` is set
``no-usage``                   the same, never any usage
``json``                       a non-streamed ``chat.completion`` despite ``stream: true``
``context-too-long``           400 with OpenAI's ``context_length_exceeded`` error code
``status-<code>``              that HTTP status with an OpenAI-style error body (401 echoes the key, as
                               some vendors do, to check that it never reaches an error message)
``stall``                      one token, then silence
``reset``                      two tokens, then a TCP reset
``cut-chunked``                two tokens, then the connection closes inside the chunked body
``cut-eof``                    two tokens, then a clean close of an EOF-delimited body (no [DONE])
``malformed``                  one token, then a chunk that is not JSON
``error-payload``              one token, then ``data: {"error": ...}``
``done-without-finish``        the answer, then ``[DONE]`` without any ``finish_reason``
``finish-then-eof``            the answer with its ``finish_reason``, then a clean close without [DONE]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from typing import Any

DEFAULT_ANSWER = "The quick brown fox jumps over the lazy dog near the quiet river bank today."


class OpenAIUpstream:
    def __init__(self, answer: str = DEFAULT_ANSWER, token_delay: float = 0.0) -> None:
        self.answer = answer
        self.token_delay = token_delay
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def __aenter__(self) -> OpenAIUpstream:
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
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
                self.requests.append((headers, body))
                if not await self._respond(writer, headers, body):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, headers: dict[str, str], body: dict[str, Any]) -> bool:
        """Write one response; False when the connection must not be reused."""
        mode = str(body.get("model", "ok"))
        words = _words(self.answer)
        limit = body.get("max_tokens") or len(words)
        finish = "length" if len(words) > limit else "stop"
        words = words[:limit]
        usage = {"prompt_tokens": _prompt_words(body), "completion_tokens": len(words)}

        if mode == "context-too-long":
            await _send_json(writer, 400, {"error": {"message": "This model's maximum context length is 8 tokens.",
                                                     "type": "invalid_request_error",
                                                     "code": "context_length_exceeded"}})
            return True
        if mode.startswith("status-"):
            status = int(mode.removeprefix("status-"))
            key = headers.get("authorization", "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {key}" if status == 401 else f"upstream says {status}"
            await _send_json(writer, status, {"error": {"message": message, "type": "test_error", "code": None}},
                             "Retry-After: 7\r\n" if status == 429 else "")
            return True
        if mode == "json":
            await _send_json(writer, 200, {
                "id": "c1", "object": "chat.completion", "model": mode, "usage": usage,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": "".join(words)}}],
            })  # fmt: skip
            return True

        chunked = mode != "cut-eof" and mode != "finish-then-eof"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Connection: close\r\n\r\n")
        )

        async def send(text: str) -> None:
            data = text.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
            await writer.drain()

        async def event(payload: object) -> None:
            await send(f"data: {json.dumps(payload)}\n\n")

        await event(_chunk({"role": "assistant"}, None))
        if mode == "stall":
            await event(_chunk({"content": words[0]}, None))
            await asyncio.sleep(30)
            return False
        head = {"reset": 2, "cut-chunked": 2, "cut-eof": 2, "malformed": 1, "error-payload": 1}.get(mode)
        for index, word in enumerate(words[:head] if head else words):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if index % 3 == 1:
                await send(": ping - keep-alive\n\n")
            await send(f"data:{json.dumps(_chunk({'content': word}, None))}\n\n")  # no space after "data:"
        if mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if mode in ("cut-chunked", "cut-eof"):
            writer.transport.close()
            return False
        if mode == "malformed":
            await send('data: {"id": "c1", "choices": [{"delta": {"content": "x"\n\n')
        elif mode == "error-payload":
            await event({"error": {"message": "The server had an error", "type": "server_error"}})
        else:
            if mode != "done-without-finish":
                await event(_chunk({}, finish))
            if mode != "no-usage" and (body.get("stream_options") or {}).get("include_usage"):
                await event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            if mode == "finish-then-eof":
                writer.transport.close()
                return False
        await send("data: [DONE]\n\n")
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return chunked


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: object, extra_headers: str = "") -> None:
    data = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                 f"{extra_headers}\r\n".encode() + data)
    await writer.drain()


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0], *(f" {word}" for word in parts[1:])]


def _prompt_words(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
