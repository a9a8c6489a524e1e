"""Two API replicas sharing PostgreSQL and Redis enforce one set of limits: together they admit no more
requests than a key's limit, a token window spent on one is spent on the other, concurrent calls over both
never overspend a budget, and a budget set through one replica binds the other at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from atrium.guard.budgets.ledger import micro_usd
from atrium.store.models import BudgetSpend
from tests.conftest import RunningApp
from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import app_for

HELLO = [{"role": "user", "content": "Hello there, fox."}]


def gateway(upstream: FaultUpstream) -> dict[str, Any]:
    up = {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-secret-0123456789"}
    return {"providers": {"up": up},
            "models": {"priced": {"provider": "up", "model": "ok", "input_price_per_1m": 100.0,
                                  "output_price_per_1m": 200.0}},
            "default_model": "priced", "cache": {"enabled": False},
            "retry": {"attempts": 1, "initial_delay_s": 0, "jitter_s": 0}}


async def replicas(tmp_path: Path, upstream: FaultUpstream, postgres_url: str, redis_url: str,
                   **settings: Any) -> tuple[Any, Any]:
    shared = {"database_url": postgres_url, "redis_url": redis_url, "gateway": gateway(upstream), **settings}
    return (await app_for(tmp_path / "a", upstream, **shared), await app_for(tmp_path / "b", upstream, **shared))


async def chat(app: RunningApp, max_tokens: int = 20) -> httpx.Response:
    return await app.client.post("/v1/chat/completions",
                                 json={"model": "priced", "messages": HELLO, "max_tokens": max_tokens})


async def test_two_replicas_together_admit_at_most_the_request_limit(tmp_path: Path, upstream: FaultUpstream,
                                                                    postgres_url: str, redis_url: str) -> None:
    a, b = await replicas(tmp_path, upstream, postgres_url, redis_url,
                          rate_limits={"key_requests_per_minute": 10, "user_requests_per_minute": None,
                                       "org_requests_per_minute": None})
    async with a as replica_a, b as replica_b:
        replies = await asyncio.gather(*(chat(replica_a if i % 2 else replica_b) for i in range(60)))
    statuses = Counter(reply.status_code for reply in replies)
    assert statuses == {200: 10, 429: 50}


async def test_a_token_window_spent_on_one_replica_is_spent_on_the_other(
        tmp_path: Path, upstream: FaultUpstream, postgres_url: str, redis_url: str) -> None:
    a, b = await replicas(tmp_path, upstream, postgres_url, redis_url, rate_limits={"key_tokens_per_minute": 30})
    async with a as replica_a, b as replica_b:
        used = 0
        while used < 30:
            reply = await chat(replica_a)
            assert reply.status_code == 200, reply.text
            used += reply.json()["usage"]["total_tokens"]
        refused = await chat(replica_b)
        assert refused.status_code == 429 and refused.headers["x-ratelimit-scope"] == "key_tokens"


async def test_concurrent_calls_over_two_replicas_never_overspend_a_budget(
        tmp_path: Path, upstream: FaultUpstream, postgres_url: str, redis_url: str) -> None:
    a, b = await replicas(tmp_path, upstream, postgres_url, redis_url)
    async with a as replica_a, b as replica_b:
        # Each call reserves under 6,000 micro-USD (20 completion tokens at 200, the prompt at 100 x 1.25).
        budget = (await replica_a.client.put("/api/v1/admin/budgets", json={
            "scope": "org", "period": "day", "limit_usd": "0.05"})).json()
        replies = await asyncio.gather(*(chat(replica_a if i % 2 else replica_b) for i in range(100)))
        statuses = Counter(reply.status_code for reply in replies)
        assert set(statuses) == {200, 402} and statuses[200] >= 50_000 // 6_000
        async with replica_a.services.db.system_session() as session:
            row = await session.scalar(select(BudgetSpend).where(BudgetSpend.budget_id == budget["id"]))
        assert row is not None and row.reserved_micro_usd == 0
        charged = sum(micro_usd(r.json()["usage"]["prompt_tokens"], r.json()["usage"]["completion_tokens"],
                                100.0, 200.0) for r in replies if r.status_code == 200)
        assert row.spent_micro_usd == charged <= 50_000


async def test_a_budget_set_through_one_replica_binds_the_other(tmp_path: Path, upstream: FaultUpstream,
                                                                postgres_url: str, redis_url: str) -> None:
    a, b = await replicas(tmp_path, upstream, postgres_url, redis_url,
                          budgets={"cache_ttl_s": 3600})  # only the notification can refresh B's cache
    async with a as replica_a, b as replica_b:
        assert (await chat(replica_b)).status_code == 200  # B now remembers "no budgets" for an hour
        await asyncio.sleep(0.5)  # B's subscription to budget changes is listening
        set_ = await replica_a.client.put("/api/v1/admin/budgets", json={
            "scope": "org", "period": "day", "limit_usd": "0"})
        assert set_.status_code == 201
        deadline = asyncio.get_running_loop().time() + 5
        while (reply := await chat(replica_b)).status_code == 200:
            assert asyncio.get_running_loop().time() < deadline, "replica B never heard of the budget"
            await asyncio.sleep(0.05)
        assert reply.status_code == 402 and reply.json()["error"]["code"] == "insufficient_quota"
