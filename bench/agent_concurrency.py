"""Figure (issue 13): concurrent agent runs streaming from one Atrium process against a fast fake upstream
(target: >= 2,000 at once, 0 errors).

One local upstream (bench/upstream_server.py: ``--tokens`` tokens ``--token-ms`` apart, each `` [1]`` so the
answer cites its source and validation accepts it), one ``atrium serve`` set up as bench/agent_ttft_overhead.py
does (embedded default on SQLite, hash embedder, one small document in ``handbook``, metering on, rate limits
far above what is sent, ``default_model: bench-model``). ``--clients`` client processes (aiohttp, one
connection per run) each hold ``--runs / --clients`` streams, started at one agreed instant or evenly over
``--ramp-s`` seconds (an arrival rate the process can admit; streams that last longer than the ramp are then
all open together), each read to its end:

``ask``   ``POST /api/v1/chat/ask`` with ``stream: true`` (a turn of the assistant graph; a new conversation
          each), done at the ``done`` event;
``runs``  ``POST /threads/{id}/runs/stream`` of the platform API on ``--assistant`` (threads made before the
          start), done at the ``end`` event with no ``error`` event before it.

Reported: completed runs and errors (an HTTP status, a typed ``error`` event, a stream that ended without its
final event, a client timeout), the most streams open at one instant, p50/p99 time to the first event and
to the first token, the wall time from the start to the last end, and the server's CPU seconds over it.
Open-file limits are raised to their hard maximum for this process, which the servers and clients inherit.

    .venv/bin/python bench/agent_concurrency.py [--runs 2000] [--path ask|runs] [--assistant assistant]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY  # noqa: E402

AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}
QUESTION = "What is the expense approval limit for a manager?"


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- client process -----------------------------------------------------------------------------------------

async def one(session: Any, url: str, path: str, body: dict[str, Any], timeout: float,
              at: float) -> dict[str, Any]:
    import aiohttp

    await asyncio.sleep(max(0.0, at - time.time()))
    started = time.time()
    out: dict[str, Any] = {"start": started, "first_event": None, "first_token": None, "error": None}
    final = "done" if path == "ask" else "end"
    token_events = ("token",) if path == "ask" else ("messages", "messages/partial")
    names: list[str] = []
    try:
        async with session.post(url, json=body, headers=AUTH,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                out["error"] = f"http {response.status}"
                await response.read()
            else:
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("data:") and names and names[-1] == "error" and out["error"] == "error event":
                        data = json.loads(line[5:])
                        out["error"] = f"error event: {data.get('code') or data.get('error')}"
                    if not line.startswith("event:"):
                        continue
                    name = line[6:].strip()
                    names.append(name)
                    now = time.time()
                    if out["first_event"] is None:
                        out["first_event"] = now - started
                    if out["first_token"] is None and name in token_events:
                        out["first_token"] = now - started
                    if name == "error":
                        out["error"] = "error event"
                if out["error"] is None and (not names or names[-1] != final):
                    out["error"] = f"no {final} event"
    except TimeoutError:
        out["error"] = "client timeout"
    except aiohttp.ClientError as exc:
        out["error"] = type(exc).__name__
    out["end"] = time.time()
    return out


async def worker(args: argparse.Namespace) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(base_url=args.url, connector=connector) as session:
        targets: list[tuple[str, dict[str, Any]]] = []
        for _ in range(args.count):
            if args.path == "ask":
                targets.append(("/api/v1/chat/ask", {"message": QUESTION, "collection": "handbook", "stream": True}))
            else:
                async with session.post("/threads", json={}, headers=AUTH) as response:
                    thread = (await response.json())["thread_id"]
                targets.append((f"/threads/{thread}/runs/stream", {
                    "assistant_id": args.assistant, "stream_mode": ["messages-tuple", "updates"],
                    "input": {"messages": [{"role": "user", "content": QUESTION}]}}))
        # this worker's runs are every --clients-th of the whole ramp, from its --offset
        gap = args.ramp_s / args.runs
        results = await asyncio.gather(*(
            one(session, url, args.path, body, args.timeout, args.start_at + (args.offset + i * args.clients) * gap)
            for i, (url, body) in enumerate(targets)))
    print(json.dumps(results))


# -- coordinator ---------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def most_open(results: list[dict[str, Any]]) -> int:
    edges = sorted([(r["start"], 1) for r in results] + [(r["end"], -1) for r in results])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--path", choices=("ask", "runs"), default="ask")
    parser.add_argument("--assistant", default="assistant", help="the platform assistant of --path runs")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--token-ms", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="per stream, seconds")
    parser.add_argument("--ramp-s", type=float, default=0.0,
                        help="start the runs evenly over this many seconds (0: all at one instant)")
    parser.add_argument("--after-src", type=Path, default=None)
    # worker mode (a client process)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_files()
    if args.worker:
        asyncio.run(worker(args))
        return
    if not (1 <= args.runs <= 20_000 and 1 <= args.clients <= 16 and 1 <= args.tokens <= 4096
            and 0 <= args.token_ms <= 10_000 and 1 <= args.timeout <= 600 and 0 <= args.ramp_s <= 600):
        raise SystemExit("an option is out of range")
    import httpx

    from _gateway import start_upstream
    from agent_ttft_overhead import ingest, servers
    from loadgen import tree_cpu_seconds

    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with tempfile.TemporaryDirectory(prefix="atrium-agent-conc-") as folder:
        tmp = Path(folder)
        upstream = start_upstream(tmp, tokens=args.tokens, token_ms=args.token_ms, word=" [1]")
        try:
            trees: dict[str, Path | None] = {"atrium": args.after_src.resolve() if args.after_src else None}
            with servers(tmp, upstream, trees) as (side,):
                with httpx.Client(base_url=side.url, headers=AUTH, timeout=60) as client:
                    ingest(client)
                share = [args.runs // args.clients + (1 if i < args.runs % args.clients else 0)
                         for i in range(args.clients)]
                start_at = time.time() + 5 + (args.runs / 400 if args.path == "runs" else 0)
                clients = [subprocess.Popen(
                    [sys.executable, __file__, "--worker", "--url", side.url, "--count", str(count),
                     "--path", args.path, "--assistant", args.assistant, "--start-at", str(start_at),
                     "--timeout", str(args.timeout), "--runs", str(args.runs), "--clients", str(args.clients),
                     "--ramp-s", str(args.ramp_s), "--offset", str(number)], stdout=subprocess.PIPE)
                    for number, count in enumerate(share)]
                pid = side.process.pid  # type: ignore[attr-defined]
                time.sleep(max(0.0, start_at - time.time()))
                cpu0 = tree_cpu_seconds(pid)
                results: list[dict[str, Any]] = []
                for process in clients:
                    out, _ = process.communicate(timeout=args.timeout + 300)
                    results += json.loads(out)
                cpu = tree_cpu_seconds(pid) - cpu0
                log_tail = (tmp / "atrium.log").read_text()[-2000:]
        finally:
            upstream.process.terminate()
            upstream.process.wait(10)
    report(results, args, cpu, limit, log_tail)


def report(results: list[dict[str, Any]], args: argparse.Namespace, cpu: float, limit: int, log_tail: str) -> None:
    errors: dict[str, int] = {}
    for result in results:
        if result["error"]:
            errors[result["error"]] = errors.get(result["error"], 0) + 1
    done = [r for r in results if not r["error"]]
    first_event = [1000 * r["first_event"] for r in results if r["first_event"] is not None]
    first_token = [1000 * r["first_token"] for r in done if r["first_token"] is not None]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    from _gateway import machine_note, markdown

    target = ("POST /api/v1/chat/ask (stream)" if args.path == "ask"
              else f"POST /threads/{{id}}/runs/stream ({args.assistant})")
    start = f"started over {args.ramp_s:g} s" if args.ramp_s else "started at one instant"
    print(f"{args.runs} runs ({start}) on {target}, from {args.clients} client processes; upstream: {args.tokens} "
          f"tokens {args.token_ms:g} ms apart; open-files limit {limit}; {machine_note()}\n")
    print(markdown(["runs", "completed", "errors", "most open at once", "first event p50 / p99",
                    "first token p50 / p99", "wall time", "server CPU"],
                   [[len(results), len(done), sum(errors.values()), most_open(results),
                     f"{statistics.median(first_event):.0f} / {pct(first_event, 0.99):.0f} ms" if first_event else "-",
                     f"{statistics.median(first_token):.0f} / {pct(first_token, 0.99):.0f} ms" if first_token else "-",
                     f"{wall:.1f} s", f"{cpu:.1f} s"]]))
    if errors:
        print(f"\nerrors: {errors}\nserver log ends:\n{log_tail}")


if __name__ == "__main__":
    main()
