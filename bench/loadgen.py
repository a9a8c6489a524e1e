"""A cheap HTTP/1.1 keep-alive load generator for OpenAI chat completions (its own process).

``--concurrency`` workers, each on one keep-alive connection, send ``--requests`` requests in all (closed
loop) after ``--warmup`` unmeasured ones, and print one JSON object: requests/s, latency and time to first
token percentiles (ms), HTTP statuses, stream outcomes, and the CPU seconds (user+sys) that each
``--cpu-pid`` process tree spent during the measured window.

A stream's outcome is read from its SSE body: ``finished`` (a ``finish_reason`` and no error), ``error_event``
(a typed error: a ``data:`` object with an ``error`` key, or ``event: error``), or ``untyped`` (the body
ended, or the connection closed, with neither). A non-stream request is ``finished`` when it is a 200
``chat.completion``. ``tokens`` counts answers by how many `` tok`` tokens (bench/upstream_server.py's)
they carried, which shows a stream that was cut, or resumed and repeated. Time to first token is the
time to the first chunk with non-empty ``content``. ``--stagger-ms`` spreads the workers' first measured
requests evenly over that long, so that equal-length streams do not start and end in lockstep.

Raw asyncio protocol with httptools' response parser on uvloop: a request costs the client a few tens of
microseconds. Every run is bounded by ``--requests`` and ``--timeout``; targets are loopback addresses only.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:9100/v1/chat/completions --model bench-model \
        --requests 2000 --concurrency 50 [--stream] [--key KEY] [--cpu-pid PID ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools

_FIRST_CONTENT = re.compile(rb'"content":\s*"[^"]')
_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """user+sys of ``root`` and all its live descendants, plus what their reaped children spent."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(v) for v in fields[11:15]) / _TICKS
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid and c not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


class Result:
    __slots__ = ("body", "complete", "latency", "status", "ttft")

    def __init__(self) -> None:
        self.status = 0
        self.body: list[bytes] = []
        self.ttft: float | None = None
        self.latency = 0.0
        self.complete = False


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Result] | None = None
        self.result = Result()
        self.started = 0.0
        self.keep_alive = True
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(complete=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._finish(complete=False)

    def on_headers_complete(self) -> None:
        self.result.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.result.ttft is None and _FIRST_CONTENT.search(body):
            self.result.ttft = time.perf_counter() - self.started
        self.result.body.append(body)

    def on_message_complete(self) -> None:
        self._finish(complete=True)

    def _finish(self, complete: bool) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.result.complete = complete
            self.result.latency = time.perf_counter() - self.started
            self.waiter.set_result(self.result)

    def send(self, payload: bytes) -> asyncio.Future[Result]:
        assert self.transport is not None
        self.result = Result()
        self.waiter = asyncio.get_running_loop().create_future()
        self.started = time.perf_counter()
        self.transport.write(payload)
        return self.waiter


def outcome(result: Result, stream: bool) -> str:
    if result.status != 200:
        return f"http_{result.status or 'none'}"
    body = b"".join(result.body)
    if not stream:
        return "finished" if result.complete and b'"choices"' in body else "untyped"
    finished = error = False
    for line in body.split(b"\n"):
        if line.startswith(b"event:") and b"error" in line:
            error = True
        elif line.startswith(b"data:"):
            data = line[5:].strip()
            if data == b"[DONE]" or not data:
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("error"):
                error = True
            for choice in event.get("choices") or [] if isinstance(event, dict) else []:
                if choice.get("finish_reason"):
                    finished = True
    if error:
        return "error_event"
    return "finished" if finished else "untyped"


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": round(statistics.median(ordered) * 1000, 3), "p95": round(at(0.95), 3),
            "p99": round(at(0.99), 3), "mean": round(statistics.fmean(ordered) * 1000, 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body: dict[str, Any] = {"model": args.model, "max_tokens": args.max_tokens,
                            "messages": [{"role": "user", "content": args.prompt}]}
    if args.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    payload = json.dumps(body).encode()
    head = (f"POST {url.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: {'text/event-stream' if args.stream else 'application/json'}\r\n"
            + (f"Authorization: Bearer {args.key}\r\n" if args.key else "")
            + f"Content-Length: {len(payload)}\r\n\r\n").encode()
    request = head + payload
    loop = asyncio.get_running_loop()
    results: list[Result] = []
    remaining = {"warmup": args.warmup, "measured": args.requests}

    async def worker(phase: str, delay_s: float = 0.0) -> None:
        conn: Connection | None = None
        if delay_s:
            await asyncio.sleep(delay_s)
        while remaining[phase] > 0:
            remaining[phase] -= 1
            if conn is None or conn.lost or not conn.keep_alive:
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                _, conn = await loop.create_connection(Connection, host, port)
            result = await conn.send(request)
            if not result.complete and conn.transport is not None:
                conn.transport.close()
                conn = None
            if phase == "measured":
                results.append(result)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def warm_then_measure() -> dict[str, Any]:
        if args.warmup:
            await asyncio.gather(*(worker("warmup") for _ in range(min(args.concurrency, args.warmup))))
        cpu0 = {pid: tree_cpu_seconds(pid) for pid in args.cpu_pid}
        client0, t0 = sum(os.times()[:2]), time.perf_counter()
        spread = args.stagger_ms / 1000 / args.concurrency
        await asyncio.gather(*(worker("measured", i * spread) for i in range(args.concurrency)))
        wall, client = time.perf_counter() - t0, sum(os.times()[:2]) - client0
        cpu = {str(pid): round(tree_cpu_seconds(pid) - cpu0[pid], 4) for pid in args.cpu_pid}
        return {"wall": wall, "client": client, "cpu": cpu}

    window = await asyncio.wait_for(warm_then_measure(), args.timeout)
    wall = window["wall"]
    return {
        "requests": len(results), "concurrency": args.concurrency, "stream": args.stream, "wall_s": round(wall, 4),
        "rps": round(len(results) / wall, 2), "latency_ms": percentiles([r.latency for r in results]),
        "ttft_ms": percentiles([r.ttft for r in results if r.ttft is not None]) if args.stream else {},
        "status": dict(Counter(str(r.status) for r in results)),
        "outcomes": dict(Counter(outcome(r, args.stream) for r in results)),
        "tokens": dict(Counter(str(b"".join(r.body).count(b" tok")) for r in results)),
        "cpu_s": window["cpu"], "client_cpu_s": round(window["client"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=None)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt", default="Say hello in a few words.")
    parser.add_argument("--cpu-pid", type=int, action="append", default=[])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--stagger-ms", type=float, default=0.0,
                        help="start the workers' first measured requests spread evenly over this long")
    args = parser.parse_args()
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    print(json.dumps(loop.run_until_complete(run(args))))


if __name__ == "__main__":
    main()
