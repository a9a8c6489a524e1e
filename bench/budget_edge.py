"""Figure: 200 concurrent requests at the edge of a budget never overspend it (issue 4).

``atrium serve`` (a real process, auth on) in front of bench/upstream_server.py (32 tokens per answer, with
usage); one priced model (100 / 200 USD per 1M tokens, so a token costs 100 / 200 micro-USD) and an org
budget sized so that only part of a burst fits. Each round sets the budget's window back to zero
(``POST /api/v1/admin/budgets/{id}/reset``), fires ``--concurrency`` requests at once over real HTTP (half
of them streamed; ``max_tokens`` 32 by default, the answer's length, so a call reserves about 7,600
micro-USD and costs about 7,100: the edge is sharp), then reads the budget back: spent must be <= the limit
every round, nothing may stay reserved, and what was charged must equal the cost of the usage the
admitted answers reported.

    .venv/bin/python bench/budget_edge.py [--rounds 20] [--concurrency 200] [--db sqlite|postgres]
        [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready  # noqa: E402
from _gateway import machine_note, markdown, start_upstream  # noqa: E402
from loadgen import tree_cpu_seconds  # noqa: E402

IN, OUT = 100.0, 200.0
CONFIG = """\
gateway:
  providers:
    up: {{kind: openai, base_url: "{upstream}", api_key: "sk-bench-upstream"}}
  models:
    bench-model: {{provider: up, model: bench-model, input_price_per_1m: {inp}, output_price_per_1m: {out}}}
  cache: {{enabled: false}}
rate_limits: {{key_requests_per_minute: 100000000, user_requests_per_minute: 100000000,
               org_requests_per_minute: 100000000}}
"""
HEADERS = {"Authorization": f"Bearer {BENCH_KEY}"}


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    """A PostgreSQL 16 server (pgserver) with a fresh database; yields its asyncpg URL."""
    import pgserver

    server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="stop")
    try:
        server.psql("CREATE DATABASE bench;")
        socket_dir = server.get_uri().split("host=")[1].split("&")[0]
        yield f"postgresql+asyncpg://postgres@/bench?host={socket_dir}"
    finally:
        server.cleanup()


def cost(usage: dict[str, int]) -> int:
    value = usage["prompt_tokens"] * IN + usage["completion_tokens"] * OUT
    return int(value) if value == int(value) else int(value) + 1


async def one(client: httpx.AsyncClient, url: str, stream: bool, max_tokens: int) -> tuple[int, int]:
    """(status, micro-USD cost of the usage the answer reported; 0 when refused); status -1: the
    connection failed."""
    try:
        return await _one(client, url, stream, max_tokens)
    except httpx.TransportError as error:
        print(f"transport error: {error!r}", file=sys.stderr)
        return -1, 0


async def _one(client: httpx.AsyncClient, url: str, stream: bool, max_tokens: int) -> tuple[int, int]:
    body: dict[str, Any] = {"model": "bench-model", "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": "Say hello in a few words."}]}
    if not stream:
        reply = await client.post(url, json=body)
        return reply.status_code, cost(reply.json()["usage"]) if reply.status_code == 200 else 0
    body.update(stream=True, stream_options={"include_usage": True})
    async with client.stream("POST", url, json=body) as reply:
        charged = 0
        async for line in reply.aiter_lines():
            if line.startswith("data: {") and '"usage"' in line:
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    charged = cost(usage)
        if reply.status_code == 200 and not charged:
            raise RuntimeError("a stream ended without usage")
        return reply.status_code, charged


async def rounds(base: str, pid: int, *, count: int, concurrency: int, limit_usd: float,
                 max_tokens: int) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits, timeout=120) as client:
        budget = (await client.put("/api/v1/admin/budgets", json={
            "scope": "org", "period": "day", "limit_usd": str(limit_usd)})).json()
        results = []
        for number in range(count):
            reset = await client.post(f"/api/v1/admin/budgets/{budget['id']}/reset")
            assert reset.status_code == 200 and reset.json()["reserved_micro_usd"] == 0, reset.text
            # A fresh client per burst: a kept-alive connection the server closed while idle would fail.
            async with httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits, timeout=120) as burst:
                started, cpu = time.perf_counter(), tree_cpu_seconds(pid)
                replies = await asyncio.gather(*(one(burst, "/v1/chat/completions", i % 2 == 1, max_tokens)
                                                 for i in range(concurrency)))
                elapsed, cpu = time.perf_counter() - started, tree_cpu_seconds(pid) - cpu
            state = next(b for b in (await client.get("/api/v1/admin/budgets")).json()["budgets"]
                         if b["id"] == budget["id"])
            statuses = Counter(status for status, _ in replies)
            results.append({
                "round": number + 1, "statuses": dict(statuses), "admitted": statuses.get(200, 0),
                "limit": state["limit_micro_usd"], "spent": state["spent_micro_usd"],
                "reserved": state["reserved_micro_usd"], "charged_by_usage": sum(c for _, c in replies),
                "seconds": elapsed, "cpu_ms_per_request": 1000 * cpu / concurrency})
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--limit-usd", type=float, default=0.6)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        tmp = Path(folder)
        upstream = start_upstream(tmp, tokens=32)
        stack.callback(stop, upstream.process)
        config = tmp / "atrium.yaml"
        config.write_text(CONFIG.format(upstream=upstream.extra["base"] + "/v1", inp=IN, out=OUT))
        extra = {"ATRIUM_CONFIG": str(config), "ATRIUM_EMBEDDING__PROVIDER": "hash",
                 "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false", "ATRIUM_CHAT__PROVIDER": "fake"}
        if args.db == "postgres":
            extra["ATRIUM_DATABASE_URL"] = stack.enter_context(postgres(tmp))
        process, base = start_serve(atrium_env(tmp / "data", **extra), tmp / "atrium.log")
        stack.callback(stop, process)
        wait_ready(process, base, timeout=180)
        try:
            results = asyncio.run(rounds(base, process.pid, count=args.rounds, concurrency=args.concurrency,
                                         limit_usd=args.limit_usd, max_tokens=args.max_tokens))
        except Exception:
            print((tmp / "atrium.log").read_text()[-4000:], file=sys.stderr)
            raise
    rows = [[r["round"], r["admitted"], r["statuses"].get(402, 0),
             sum(v for k, v in r["statuses"].items() if k not in (200, 402)), r["spent"], r["limit"],
             f"{r['spent'] / r['limit']:.4f}", r["reserved"], "yes" if r["charged_by_usage"] == r["spent"] else "NO",
             f"{r['seconds']:.2f}", f"{r['cpu_ms_per_request']:.2f}"] for r in results]
    print(markdown(["round", "admitted (200)", "refused (402)", "other", "spent (micro-USD)", "limit",
                    "spent / limit", "left reserved", "spent = usage cost", "burst s", "server CPU ms/request"],
                   rows))
    ratios = [r["spent"] / r["limit"] for r in results]
    over = sum(1 for r in results if r["spent"] > r["limit"])
    admitted = [r["admitted"] for r in results]
    print(f"\n{args.db}: {len(results)} rounds x {args.concurrency} concurrent requests; max spent/limit "
          f"{max(ratios):.4f}, min {min(ratios):.4f}; rounds over budget: {over}; admitted per round "
          f"{min(admitted)}-{max(admitted)}; {machine_note()}")


if __name__ == "__main__":
    main()
