"""Figure: WS fan-out (issue 13): events per second delivered to 500 WebSocket connections, and the delay
from an event's publication to its arrival (p50, p99), with the server's CPU.

``atrium serve`` (the embedded default: SQLite, in-process pub/sub; the fake chat model and hash embedder,
which play no part here) runs in its own process. One client process opens ``--connections`` sockets
with the ``websockets`` library, all subscribed to one organisation-visible agent thread, plus one
typist socket that sends ``typing`` into that thread ``--rates`` times per second (each for
``--seconds``). Each typing event is published once and delivered by the hub to every subscribed socket
(its audience checked per socket, its own bounded outbox and writer each). The delay is the client's clock
at arrival minus the event's ``ts`` (the server's clock when it published; same machine).
A rate's window ends when every event arrived (or 15 s after the last was sent); deliveries/s is over
that window. All sockets use one key, so the per-user socket limit and the message rate limit are
raised for the run.

    .venv/bin/python bench/ws_fanout.py [--connections 500] [--rates 10,20,40] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).parent))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready
from _gateway import machine_note, markdown

HEADERS = {"Authorization": f"Bearer {BENCH_KEY}"}


class Receiver:
    """Counts the typing events of every socket and their delays (only while ``recording``)."""

    def __init__(self) -> None:
        self.recording = False
        self.delays: list[float] = []
        self.lagged = 0

    async def read(self, ws: ClientConnection) -> None:
        async for text in ws:
            now = time.time()
            if not self.recording:
                continue
            event = json.loads(text)
            if event["type"] == "typing":
                self.delays.append(now - event["ts"])
            elif event["type"] == "lagged":
                self.lagged += event["dropped"]


async def open_socket(ws_url: str, thread_id: str) -> ClientConnection:
    ws = await connect(f"{ws_url}/ws", additional_headers=HEADERS, open_timeout=30, max_queue=None)
    assert json.loads(await ws.recv())["type"] == "ready"
    await ws.send(json.dumps({"type": "subscribe", "id": "s", "thread_id": thread_id}))
    while json.loads(await ws.recv())["type"] != "subscribed":
        pass
    return ws


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


async def run(url: str, server: psutil.Process, connections: int, rates: list[int],
              seconds: float) -> list[list[object]]:
    ws_url = url.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as client:
        response = await client.post("/threads", json={"visibility": "org"})
        response.raise_for_status()
        thread_id = response.json()["thread_id"]
    sockets: list[ClientConnection] = []
    for start in range(0, connections, 50):  # in batches, as clients arrive
        batch = range(start, min(connections, start + 50))
        sockets += await asyncio.gather(*(open_socket(ws_url, thread_id) for _ in batch))
    typist = await connect(f"{ws_url}/ws", additional_headers=HEADERS, open_timeout=30)
    await typist.recv()
    receiver = Receiver()
    readers = [asyncio.create_task(receiver.read(ws)) for ws in sockets]
    rows: list[list[object]] = []
    me = psutil.Process()
    message = json.dumps({"type": "typing", "thread_id": thread_id})
    for rate in rates:
        receiver.delays, receiver.lagged, receiver.recording = [], 0, True
        cpu_before = sum(server.cpu_times()[:2])
        client_before = sum(me.cpu_times()[:2])
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() - started < seconds:
            await typist.send(message)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        expected = sent * connections
        waited = time.perf_counter()
        while len(receiver.delays) + receiver.lagged < expected and time.perf_counter() - waited < 15:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the last events arrive (or the wait gives up)
        elapsed = time.perf_counter() - started
        receiver.recording = False
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        client_cpu = sum(me.cpu_times()[:2]) - client_before
        delivered = len(receiver.delays)
        p50, p99 = percentile(receiver.delays, 0.5) * 1000, percentile(receiver.delays, 0.99) * 1000
        rows.append([rate, sent, f"{delivered:,} / {expected:,}", f"{delivered / elapsed:,.0f}",
                     f"{p50:.1f}", f"{p99:.1f}",
                     receiver.lagged, f"{100 * cpu / elapsed:.0f}%", f"{cpu / max(1, delivered) * 1e6:.1f}",
                     f"{100 * client_cpu / elapsed:.0f}%"])
        print(markdown(HEADERS_TABLE, rows[-1:]).splitlines()[-1], flush=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in [*sockets, typist]), return_exceptions=True)
    return rows


HEADERS_TABLE = ["typing events/s", "events sent", "delivered / expected", "deliveries/s", "p50 delay ms",
                 "p99 delay ms", "dropped (lagged)", "server CPU", "server CPU µs per delivery", "client CPU"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rates", default="10,20,40")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = atrium_env(Path(folder) / "data", ATRIUM_CHAT__PROVIDER="fake", ATRIUM_EMBEDDING__PROVIDER="hash",
                         ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_RATE_LIMITS__ENABLED="false",
                         ATRIUM_REALTIME__MAX_SOCKETS_PER_USER=str(args.connections + 10))
        process, url = start_serve(env, Path(folder) / "serve.log")
        try:
            wait_ready(process, url)
            rows = asyncio.run(run(url, psutil.Process(process.pid), args.connections,
                                   [int(rate) for rate in args.rates.split(",")], args.seconds))
        finally:
            stop(process)
    print()
    print(f"{args.connections} sockets, {args.seconds:.0f} s per rate; {machine_note()}")
    print(markdown(HEADERS_TABLE, rows))


if __name__ == "__main__":
    main()
