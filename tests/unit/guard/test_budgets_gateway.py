"""Budgets in the gateway stack (``BudgetedChatModel`` and ``Gateway.embed``) against the fault-injecting
upstream: a call reserves the most it may cost on the dearest model of its route and settles with what it
cost, however it ends: finished, cut by the upstream, failed after tokens, stopped by its consumer,
cancelled. Over budget, nothing reaches the upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from atrium.errors import BudgetExceeded
from atrium.gateway.ports import CallContext, ChatEvent, ChatMessage, ChatRequest, ErrorEvent, Token, Usage
from atrium.guard.budgets.ledger import micro_usd
from atrium.store.models import Budget, BudgetSpend
from tests.conftest import RunningApp
from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import app_for, org_of

IN, OUT = 100.0, 200.0  # USD per 1M tokens: a prompt token costs 100 micro-USD, a completion token 200
MESSAGES = (ChatMessage("user", "Tell me about the fox and the river."),)


def priced_gateway(upstream: FaultUpstream) -> dict[str, Any]:
    up = {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-secret-0123456789"}
    price = {"input_price_per_1m": IN, "output_price_per_1m": OUT}
    return {
        "providers": {"up": up, "up-dear": dict(up)},
        "models": {
            "priced": {"provider": "up", "model": "ok", **price},
            "priced-no-usage": {"provider": "up", "model": "no-usage", **price},
            "priced-cut": {"provider": "up", "model": "cut-chunked", **price},
            "priced-error": {"provider": "up", "model": "error-payload", **price},
            "priced-stall": {"provider": "up", "model": "stall", **price},
            "cheap": {"provider": "up", "model": "ok", "input_price_per_1m": 1.0, "output_price_per_1m": 1.0},
            "dear": {"provider": "up-dear", "model": "status-503", "input_price_per_1m": 1000.0,
                     "output_price_per_1m": 1000.0},
            "embed": {"provider": "up", "model": "text-embedding-3-small", "kind": "embedding", "dimensions": 64,
                      "input_price_per_1m": IN},
        },
        "routes": {"cheap-then-dear": {"models": ["cheap", "dear"]}},
        "default_model": "priced",
        "retry": {"attempts": 1, "initial_delay_s": 0, "jitter_s": 0},
        "breaker": {"failure_threshold": 1000},
        "cache": {"enabled": True},
    }


@pytest.fixture
async def running(tmp_path: Path, upstream: FaultUpstream) -> Any:
    async with await app_for(tmp_path, upstream, gateway=priced_gateway(upstream)) as app:
        yield app


def request(model: str, *, org: str, max_tokens: int | None = 50, cache: bool = False) -> ChatRequest:
    return ChatRequest(messages=MESSAGES, model=model, max_tokens=max_tokens,
                       context=CallContext(org_id=org, endpoint="/test", cache=cache))


async def budget(running: RunningApp, org: str, limit: int) -> str:
    async with running.services.db.system_session() as session:
        row = Budget(org_id=org, scope="org", subject_id=org, period="day", limit_micro_usd=limit)
        session.add(row)
        await session.flush()
        budget_id = row.id
    await running.services.budgets.changed(org)
    return budget_id


async def spend(running: RunningApp, budget_id: str) -> tuple[int, int]:
    async with running.services.db.system_session() as session:
        rows = (await session.execute(select(BudgetSpend.spent_micro_usd, BudgetSpend.reserved_micro_usd)
                                      .where(BudgetSpend.budget_id == budget_id))).all()
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


async def settled(running: RunningApp, budget_id: str, timeout: float = 5.0) -> tuple[int, int]:
    """The spend once no reservation is held any more (settling may finish in its own task)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (state := await spend(running, budget_id))[1]:
        assert asyncio.get_running_loop().time() < deadline, f"still reserved: {state}"
        await asyncio.sleep(0.02)
    return state


def offline_cost(running: RunningApp, text: str) -> int:
    counter = running.services.gateway.counter
    return micro_usd(counter.count_messages(MESSAGES), counter.count(text), IN, OUT)


async def events_of(running: RunningApp, chat_request: ChatRequest) -> list[ChatEvent]:
    return [event async for event in running.services.gateway.chat.stream(chat_request)]


async def test_a_finished_call_is_charged_its_usage_as_metering_records_it(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    events = await events_of(running, request("priced", org=org))
    usage = next(e for e in events if isinstance(e, Usage))
    spent, reserved = await spend(running, budget_id)
    assert (spent, reserved) == (micro_usd(usage.prompt_tokens, usage.completion_tokens, IN, OUT), 0)
    await running.services.gateway.recorder.flush()
    async with running.services.db.system_session() as session:
        from atrium.store.models import UsageRecord

        row = await session.scalar(select(UsageRecord).where(UsageRecord.org_id == org))
    assert row is not None and spent == pytest.approx(row.cost_usd * 1_000_000, abs=1)


async def test_a_stream_cut_by_the_upstream_settles_to_its_partial_cost(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    events = await events_of(running, request("priced-cut", org=org))
    assert isinstance(events[-1], ErrorEvent) and not any(isinstance(e, Usage) for e in events)
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text  # two tokens came before the cut
    assert await spend(running, budget_id) == (offline_cost(running, text), 0)


async def test_an_upstream_error_after_tokens_settles_to_what_streamed(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    events = await events_of(running, request("priced-error", org=org))
    assert isinstance(events[-1], ErrorEvent)
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text and await spend(running, budget_id) == (offline_cost(running, text), 0)


async def test_a_consumer_that_stops_reading_settles_what_it_got(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    stream = running.services.gateway.chat.stream(request("priced-stall", org=org))
    text = ""
    async for event in stream:
        if isinstance(event, Token):
            text = event.text
            break
    assert (await spend(running, budget_id))[1] > 0  # held while the call runs
    await stream.aclose()
    assert await settled(running, budget_id) == (offline_cost(running, text), 0)


@pytest.mark.parametrize("how", ["task", "cancel_scope"])
async def test_a_cancelled_call_still_settles(running: RunningApp, how: str) -> None:
    """``task``: asyncio's cancel, delivered once. ``cancel_scope``: anyio's, as Starlette cancels a response
    whose client went away; it cancels every later await in the scope too, the settling one included
    unless it is shielded."""
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    first = asyncio.Event()
    seen: list[str] = []
    scope = anyio.CancelScope()

    async def consume() -> None:
        with scope:
            async for event in running.services.gateway.chat.stream(request("priced-stall", org=org)):
                if isinstance(event, Token):
                    seen.append(event.text)
                    first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    if how == "task":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        scope.cancel()
        await task
    assert await settled(running, budget_id) == (offline_cost(running, "".join(seen)), 0)


async def test_over_budget_nothing_reaches_the_upstream(running: RunningApp, upstream: FaultUpstream) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 1_000)  # far less than 50 completion tokens at 200 each
    calls = upstream.count("ok")
    with pytest.raises(BudgetExceeded, match="org budget"):
        await events_of(running, request("priced", org=org))
    assert upstream.count("ok") == calls
    assert await spend(running, budget_id) == (0, 0)


async def test_the_reservation_prices_the_dearest_model_of_the_route(running: RunningApp) -> None:
    org = await org_of(running)
    counter = running.services.gateway.counter
    prompt = counter.count_messages(MESSAGES) * running.services.settings.budgets.prompt_margin
    cheap_most = micro_usd(prompt, 50, 1.0, 1.0)
    dear_most = micro_usd(prompt, 50, 1000.0, 1000.0)
    await budget(running, org, dear_most - 1)
    # The cheap model alone fits; the route may fall back to the dear one, so it must fit too.
    assert cheap_most < dear_most - 1
    await events_of(running, request("cheap", org=org))
    with pytest.raises(BudgetExceeded):
        await events_of(running, request("cheap-then-dear", org=org))


async def test_without_max_tokens_the_models_output_limit_is_reserved(running: RunningApp) -> None:
    org = await org_of(running)
    # priced has the default max_output_tokens (4096): 4096 * 200 micro-USD is far above this budget,
    # which 50 tokens fit easily.
    await budget(running, org, 100_000)
    await events_of(running, request("priced", org=org, max_tokens=50))
    with pytest.raises(BudgetExceeded):
        await events_of(running, request("priced", org=org, max_tokens=None))


async def test_without_usage_the_tokens_are_counted_offline(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    events = await events_of(running, request("priced-no-usage", org=org))
    usage = next(e for e in events if isinstance(e, Usage))  # the adapter's own estimate
    spent, _ = await spend(running, budget_id)
    assert spent == micro_usd(usage.prompt_tokens, usage.completion_tokens, IN, OUT) > 0


async def test_a_cache_hit_costs_nothing(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 10_000_000)
    await events_of(running, request("priced", org=org, cache=True))
    first, _ = await spend(running, budget_id)
    assert first > 0
    replay = await events_of(running, request("priced", org=org, cache=True))
    assert getattr(replay[-1], "cached", False)
    assert await spend(running, budget_id) == (first, 0)


async def test_embeddings_are_reserved_and_charged(running: RunningApp) -> None:
    org = await org_of(running)
    budget_id = await budget(running, org, 5_000)
    context = CallContext(org_id=org, endpoint="/test")
    result = await running.services.gateway.embed("embed", ["one two three"], context)
    assert await spend(running, budget_id) == (micro_usd(result.prompt_tokens, 0, IN, 0), 0)
    with pytest.raises(BudgetExceeded):
        await running.services.gateway.embed("embed", ["word " * 200], context)


async def test_a_call_resolves_its_route_once_and_every_layer_reuses_it(running: RunningApp,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard, the budget and the router share one resolution: at the front when the caller resolved
    it (``start_chat``), else in the outermost layer that needs it."""
    from atrium.gateway.ports import with_route

    org = await org_of(running)
    await budget(running, org, 10_000_000)
    gateway = running.services.gateway
    calls: list[str] = []
    resolve = gateway.catalogue.route

    def counted(requested: str, **kwargs: Any) -> Any:
        calls.append(requested)
        return resolve(requested, **kwargs)

    monkeypatch.setattr(gateway.catalogue, "route", counted)
    events = await events_of(running, request("priced", org=org))
    assert any(isinstance(e, Usage) for e in events)
    assert calls == ["priced"]
    calls.clear()
    routed = with_route(request("priced", org=org), gateway.check(request("priced", org=org)))
    assert calls == ["priced"]
    await events_of(running, routed)
    assert calls == ["priced"]
