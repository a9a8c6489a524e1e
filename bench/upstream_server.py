"""A fast, fault-injecting OpenAI chat-completions upstream for the gateway benches (its own process).

``POST /v1/chat/completions`` answers ``--tokens`` tokens: one JSON ``chat.completion`` (with ``usage``),
or, when ``stream`` is true, SSE ``chat.completion.chunk`` events (a role chunk, one chunk per token, a
``finish_reason`` chunk, a usage chunk when ``stream_options.include_usage``, then ``data: [DONE]``) over
chunked transfer encoding. ``--first-token-ms`` delays the first token (both kinds) and ``--token-ms``
spaces the streamed tokens; ``--word`` is each token's text (`` tok`` by default).

Faults apply only to requests whose ``model`` is ``--fault-model`` (so another model name, e.g. a
fallback, stays healthy): ``--fail-rate`` of them get ``503`` with an OpenAI error body, and
``--cut-rate`` of the streams are cut half-way (the connection closes: no final chunk, no ``[DONE]``).
``GET /stats`` returns counters (connections, requests, failed, cut, by model) and this process's CPU seconds.

Raw asyncio protocol on uvloop with httptools' parser: a request costs a few tens of microseconds, so the
upstream is not what a bench measures.

    .venv/bin/python bench/upstream_server.py --port 9100 --tokens 64 --token-ms 5 --first-token-ms 20 \
        --fault-model bench-model --fail-rate 0.3 --cut-rate 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from typing import Any

import httptools

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    loads = orjson.loads
except ImportError:  # pragma: no cover - the project venv has orjson
    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    loads = json.loads  # type: ignore[assignment]

STATS: Counter[str] = Counter()


class Options(argparse.Namespace):
    tokens: int
    token_ms: float
    first_token_ms: float
    fault_model: str | None
    fail_rate: float
    cut_rate: float
    seed: int
    word: str


def _response_head(status: str, content_type: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type + b"\r\n" + framing +
            b"Connection: keep-alive\r\n\r\n")


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Upstream(asyncio.Protocol):
    def __init__(self, opts: Options, rng: random.Random) -> None:
        self.opts, self.rng = opts, rng
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.busy = False
        self.pending: list[tuple[bytes, bytes]] = []
        self.task: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        STATS["connections"] += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.pending.append((self.url, b"".join(self.body)))
        if not self.busy:
            self.busy = True
            self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while self.pending:
            url, body = self.pending.pop(0)
            await self._handle(url, body)
        self.busy = False

    def _send_json(self, status: str, value: Any) -> None:
        payload = dumps(value)
        assert self.transport is not None
        self.transport.write(_response_head(status, b"application/json", len(payload)) + payload)

    async def _handle(self, url: bytes, body: bytes) -> None:
        assert self.transport is not None
        if url.startswith(b"/stats"):
            cpu = os.times()
            self._send_json("200 OK", {**STATS, "cpu_s": cpu.user + cpu.system})
            return
        if url.startswith(b"/v1/traces"):  # an OTLP sink for a traced Atrium (bench/gateway_cpu_per_request.py)
            STATS["trace_exports"] += 1
            self.transport.write(_response_head("200 OK", b"application/x-protobuf", 0))
            return
        if not url.startswith(b"/v1/chat/completions"):
            self._send_json("404 Not Found", {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        request = loads(body)
        model = str(request.get("model", ""))
        stream = bool(request.get("stream"))
        STATS["requests"] += 1
        STATS[f"requests:{model}"] += 1
        faulty = model == self.opts.fault_model
        if faulty and self.rng.random() < self.opts.fail_rate:
            STATS["failed"] += 1
            self._send_json("503 Service Unavailable", {"error": {
                "message": "The upstream is overloaded (injected fault).", "type": "server_error",
                "param": None, "code": "service_unavailable"}})
            return
        prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", [])) // 4 + 1
        n = self.opts.tokens
        if self.opts.first_token_ms:
            await asyncio.sleep(self.opts.first_token_ms / 1000)
        created = int(time.time())
        ident = f"chatcmpl-{STATS['requests']}"
        if not stream:
            self._send_json("200 OK", {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.opts.word * n},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}})
            return
        cut_at = n // 2 if faulty and self.rng.random() < self.opts.cut_rate else None
        head = (b'data: {"id":"' + ident.encode() + b'","object":"chat.completion.chunk","created":' +
                str(created).encode() + b',"model":' + dumps(model) + b',"choices":[{"index":0,"delta":')
        write = self.transport.write
        write(_response_head("200 OK", b"text/event-stream", None) +
              _chunk(head + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n'))
        token = _chunk(head + b'{"content":' + dumps(self.opts.word) + b'},"finish_reason":null}]}\n\n')
        for i in range(n):
            if i == cut_at:
                STATS["cut"] += 1
                self.transport.close()
                return
            if i and self.opts.token_ms:
                await asyncio.sleep(self.opts.token_ms / 1000)
            if self.transport.is_closing():
                return
            write(token)
        tail = _chunk(head + b'{},"finish_reason":"stop"}]}\n\n')
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = dumps({"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n})
            tail += _chunk(head.split(b',"choices"')[0] + b',"choices":[],"usage":' + usage + b"}\n\n")
        write(tail + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--token-ms", type=float, default=0.0)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--fault-model", default=None)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--cut-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--word", default=" tok", help="the text of each token (e.g. ' [1]': an answer that cites)")
    opts = parser.parse_args(namespace=Options())
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    rng = random.Random(opts.seed)
    server = loop.run_until_complete(
        loop.create_server(lambda: Upstream(opts, rng), opts.host, opts.port, backlog=1024))
    print(f"upstream listening on {opts.host}:{opts.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(server.serve_forever())


if __name__ == "__main__":
    main()
