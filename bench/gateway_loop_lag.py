"""Diagnosis for figure (c): how long Atrium's event loop keeps a ready task waiting under 50 paced streams.

Not a target figure: it explains the time-to-first-token results of ``bench/gateway_ttft.py``. The app runs
in this process (ASGI called directly, no uvicorn, no HTTP client), in front of ``bench/upstream_server.py``
pacing tokens like a model (first token after 50 ms, then 10 ms apart). A probe task sleeps 1 ms at a time
and records how late it wakes: that lateness is what a new request or a first token waits on the loop. The
run is repeated with the garbage collector off, to tell collector pauses from plain queueing.

    .venv/bin/python bench/gateway_loop_lag.py [--streams 300] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY  # noqa: E402
from _gateway import ATRIUM_CONFIG, UPSTREAM_KEY, markdown, start_upstream, stop  # noqa: E402


def chat_body() -> bytes:
    return json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 64, "stream": True}).encode()


async def one_stream(app: Any, body: bytes) -> None:
    """One streamed chat completion through the ASGI app, read to its end."""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"authorization", f"Bearer {BENCH_KEY}".encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    done = asyncio.Event()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(_message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)
    done.set()


async def measure(app: Any, streams: int, concurrency: int) -> list[float]:
    lags: list[float] = []
    running = True

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while running:
            start = loop.time()
            await asyncio.sleep(0.001)
            lags.append((loop.time() - start - 0.001) * 1000)

    gate = asyncio.Semaphore(concurrency)
    body = chat_body()

    async def limited() -> None:
        async with gate:
            await one_stream(app, body)

    prober = asyncio.create_task(probe())
    await asyncio.gather(*(limited() for _ in range(streams)))
    running = False
    await prober
    return sorted(lags)


async def run(args: argparse.Namespace, tmp: Path) -> list[list[object]]:
    from atrium.app import create_app
    from atrium.settings import Settings

    upstream = start_upstream(tmp, tokens=64, token_ms=10, first_token_ms=50)
    try:
        config = tmp / "atrium.yaml"
        config.write_text(ATRIUM_CONFIG.format(upstream=upstream.extra["base"] + "/v1", key=UPSTREAM_KEY))
        os.environ.update(ATRIUM_DATA_DIR=str(tmp / "data"), ATRIUM_BOOTSTRAP_ADMIN_KEY=BENCH_KEY,
                          ATRIUM_CONFIG=str(config), ATRIUM_EMBEDDING__PROVIDER="hash",
                          ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_CHAT__PROVIDER="fake")
        app = create_app(Settings())
        rows = []
        async with app.router.lifespan_context(app):
            await measure(app, 20, 10)  # warm-up: connections, caches
            for label, collector in (("on", True), ("off", False)):
                if not collector:
                    gc.disable()
                started = time.process_time()
                lags = await measure(app, args.streams, args.concurrency)
                cpu = (time.process_time() - started) / args.streams * 1000
                gc.enable()

                def at(q: float, lags: list[float] = lags) -> str:
                    return f"{lags[int(q * (len(lags) - 1))]:.2f}"

                late = sum(lag > 5 for lag in lags)
                rows.append([label, at(0.5), at(0.9), at(0.99), f"{lags[-1]:.1f}",
                             f"{late} of {len(lags)}", f"{cpu:.2f}"])
        return rows
    finally:
        stop(upstream.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = asyncio.run(run(args, Path(folder)))
    print(f"Loop lag under {args.concurrency} paced streams ({args.streams} in all), ms\n")
    print(markdown(["collector", "p50", "p90", "p99", "max", "wakes > 5 ms late", "CPU ms / stream"], rows))


if __name__ == "__main__":
    main()
