"""The assembled gateway over real HTTP to a fault-injecting upstream: routes and fallback, breakers
(per replica and shared through Redis), the response cache, tenant policy, metering, rate limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import select

from atrium.gateway.ports import Done, ErrorEvent, Start, Token
from atrium.store.models import UsageRecord
from tests.conftest import ADMIN_KEY
from tests.fault_upstream import DEFAULT_ANSWER, FaultUpstream
from tests.gateway_helpers import app_for, ask, collect, gateway_config, org_of


async def test_a_failing_model_falls_back_before_the_first_token(tmp_path: Path, upstream: FaultUpstream) -> None:
    async with await app_for(tmp_path, upstream) as running:
        org = await org_of(running)
        events = await collect(running, ask("resilient", org=org))
    assert isinstance(events[0], Start) and events[0].model == "good"
    assert "".join(e.text for e in events if isinstance(e, Token)) == DEFAULT_ANSWER
    assert isinstance(events[-1], Done) and events[-1].model == "good"
    assert upstream.count("status-503") == 2  # retried once (attempts=2), then moved on
    assert not any(isinstance(e, ErrorEvent) for e in events)


async def test_a_stream_cut_after_tokens_ends_with_a_typed_error_not_a_switch(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    async with await app_for(tmp_path, upstream) as running:
        org = await org_of(running)
        events = await collect(running, ask("cut", org=org))
    assert [e for e in events if isinstance(e, Token)]
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "upstream_error"
    assert not any(isinstance(e, Done) for e in events)
    assert upstream.count("ok") == 0  # never switched mid-answer


async def test_the_breaker_opens_refuses_without_calling_and_shows_in_admin_and_metrics(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    async with await app_for(tmp_path, upstream) as running:
        org = await org_of(running)
        for _ in range(2):  # 2 requests x 2 attempts = 4 failures >= threshold 3
            events = await collect(running, ask("flaky", org=org))
            assert isinstance(events[-1], ErrorEvent)
        calls = upstream.count("status-503")
        refused = await collect(running, ask("flaky", org=org))
        assert isinstance(refused[-1], ErrorEvent) and refused[-1].code == "circuit_open"
        assert upstream.count("status-503") == calls
        # "good" shares the provider "up", so its breaker is open too: the route falls to nothing else
        admin = await running.client.get("/api/v1/admin/gateway/breakers")
        assert admin.status_code == 200
        states = {b["provider"]: b for b in admin.json()["breakers"]}
        assert states["up"]["state"] == "open" and states["here"]["state"] == "closed"
        metrics = (await running.client.get("/metrics")).text
        assert 'atrium_gateway_breaker_state{provider="up"} 2.0' in metrics
        assert 'atrium_gateway_calls_total{model="flaky",outcome="circuit_open",provider="up"}' in metrics
        reset = await running.client.post("/api/v1/admin/gateway/breakers/up/reset")
        assert reset.status_code == 200 and reset.json()["state"] == "closed"
        unknown = await running.client.post("/api/v1/admin/gateway/breakers/nowhere/reset")
        assert unknown.status_code == 404
        again = await collect(running, ask("good", org=org))
        assert isinstance(again[-1], Done)


async def test_cache_hits_skip_the_upstream_and_are_metered_at_no_cost(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    async with await app_for(tmp_path, upstream) as running:
        org = await org_of(running)
        first = await collect(running, ask("good", "Cache me", org=org, cache=True))
        second = await collect(running, ask("good", "Cache me", org=org, cache=True))
        assert upstream.count("ok") == 1
        assert isinstance(second[-1], Done) and second[-1].cached and not first[-1].cached  # type: ignore[union-attr]
        await running.services.gateway.recorder.flush()
        async with running.services.db.system_session() as session:
            rows = (await session.scalars(select(UsageRecord).order_by(UsageRecord.id))).all()
    assert [(r.outcome, r.model, r.provider) for r in rows] == [("ok", "good", "up"), ("cache_hit", "good", "up")]
    assert rows[0].cost_usd == pytest.approx((rows[0].prompt_tokens * 1.0 + rows[0].completion_tokens * 2.0) / 1e6)
    assert rows[0].cost_usd > 0 and rows[1].cost_usd == 0
    assert rows[0].endpoint == "/test" and rows[0].org_id == org


async def test_a_local_only_tenant_is_served_by_the_local_model(tmp_path: Path, upstream: FaultUpstream) -> None:
    async with await app_for(tmp_path, upstream) as probe:
        org = await org_of(probe)
    config = gateway_config(upstream, tenants={org: {"local_only": True}})
    async with await app_for(tmp_path, upstream, gateway=config) as running:
        events = await collect(running, ask("anywhere", org=org))
        denied = await collect(running, ask("good", org=org))
    assert isinstance(events[0], Start) and events[0].model == "onprem"
    assert "".join(e.text for e in events if isinstance(e, Token)) == "Answered on premises."
    assert upstream.count("ok") == 0
    assert isinstance(denied[-1], ErrorEvent) and denied[-1].code == "model_not_allowed"


async def test_rate_limits_answer_429_with_retry_after_and_quota_headers(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    limits = {"key_requests_per_minute": 2, "user_requests_per_minute": None, "org_requests_per_minute": None}
    async with await app_for(tmp_path, upstream, rate_limits=limits) as running:
        body = {"query": "refunds", "limit": 3}
        first = await running.client.post("/api/v1/search/semantic", json=body)
        second = await running.client.post("/api/v1/search/semantic", json=body)
        third = await running.client.post("/api/v1/search/semantic", json=body)
        unlimited = await running.client.get("/api/v1/documents")  # listing spends no model capacity
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("2", "1")
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert unlimited.status_code == 200
    assert ADMIN_KEY not in third.text


async def test_a_whole_answer_cut_half_way_falls_back(tmp_path: Path, upstream: FaultUpstream) -> None:
    """A non-stream request is one non-streamed upstream call, so a cut body fails before any output and
    the route's next model serves it."""
    async with await app_for(tmp_path, upstream) as running:
        org = await org_of(running)
        events = await collect(running, dataclasses.replace(ask("cut", org=org), stream=False))
    assert isinstance(events[0], Start) and events[0].model == "good"
    assert "".join(e.text for e in events if isinstance(e, Token)) == DEFAULT_ANSWER
    assert isinstance(events[-1], Done)
    assert upstream.count("cut-chunked") == 2 and upstream.count("ok") == 1
    assert all(r.body.get("stream") is False for r in upstream.requests)
