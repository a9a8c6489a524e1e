"""Budgets and token limits over HTTP: the admin endpoints (set, list, reset, delete; audited; one tenant
never sees or touches another's), the caller's own view, 402 from every model endpoint when over budget
(in each vendor's error shape, through the official SDKs), a client that hangs up mid-stream still being
charged what streamed, and tokens-per-minute limits answering 429 with their quota headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import func, select

from atrium.accounts.api_keys import create_key
from atrium.app import create_app
from atrium.guard.budgets.ledger import micro_usd
from atrium.store.models import AuditEvent, BudgetSpend, Conversation, Membership, Organization, User
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, LiveServer, RunningApp, free_port, make_settings, run_app
from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import org_of

IN, OUT = 100.0, 200.0
HELLO = [{"role": "user", "content": "Hello there, fox."}]


def priced_gateway(upstream: FaultUpstream) -> dict[str, Any]:
    up = {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-secret-0123456789"}
    claude = {"kind": "anthropic", "base_url": upstream.root_url, "api_key": "sk-upstream-secret-0123456789"}
    price = {"input_price_per_1m": IN, "output_price_per_1m": OUT}
    return {
        "providers": {"up": up, "claude": claude},
        "models": {"priced": {"provider": "up", "model": "ok", **price},
                   "priced-stall": {"provider": "up", "model": "stall", **price},
                   "claude-priced": {"provider": "claude", "model": "ok", **price}},
        "default_model": "priced",
        "retry": {"attempts": 1, "initial_delay_s": 0, "jitter_s": 0},
        "cache": {"enabled": False},
    }


async def settings_for(tmp_path: Path, upstream: FaultUpstream, **overrides: Any) -> Any:
    return await asyncio.to_thread(make_settings, tmp_path / "data", gateway=priced_gateway(upstream), **overrides)


@pytest.fixture
async def app(tmp_path: Path, upstream: FaultUpstream) -> AsyncIterator[RunningApp]:
    async with run_app(await settings_for(tmp_path, upstream), configured=True) as running:
        yield running


@pytest.fixture
async def live(tmp_path: Path, upstream: FaultUpstream) -> AsyncIterator[LiveServer]:
    settings = await settings_for(tmp_path, upstream)
    async with LiveServer(create_app(settings), free_port()) as server:
        yield server


async def new_key(services: Any, org_id: str, *, role: str = "member", user: bool = True,
                  tokens_per_minute: int | None = None) -> tuple[str, str, str | None]:
    """A key (and its user) in ``org_id``: ``(raw key, key id, user id)``."""
    async with services.db.system_session() as session:
        user_id = None
        if user:
            row = User(org_id=org_id, email=f"{role}-{free_port()}@example.org", role=role)
            session.add(row)
            await session.flush()
            session.add(Membership(org_id=org_id, user_id=row.id, role=role))
            user_id = row.id
        key, raw = await create_key(session, org_id=org_id, user_id=user_id, role=role,  # type: ignore[arg-type]
                                    name="test", tokens_per_minute=tokens_per_minute)
        return raw, key.id, user_id


async def new_org(services: Any) -> str:
    async with services.db.system_session() as session:
        org = Organization(name="Other")
        session.add(org)
        await session.flush()
        return org.id


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def put_budget(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.put("/api/v1/admin/budgets", json=body)


async def test_admins_set_list_reset_and_delete_budgets_and_every_change_is_audited(app: RunningApp) -> None:
    client, org = app.client, await org_of(app)
    created = await put_budget(client, scope="org", period="day", limit_usd="5")
    assert created.status_code == 201, created.text
    budget = created.json()
    assert budget["subject_id"] == org and budget["limit_micro_usd"] == 5_000_000
    assert budget["remaining_usd"] == 5.0 and budget["resets_at"].endswith("+00:00")
    changed = await put_budget(client, scope="org", subject_id=org, period="day", limit_usd="7.123456")
    assert changed.status_code == 200 and changed.json()["id"] == budget["id"]
    assert changed.json()["limit_micro_usd"] == 7_123_456

    reply = await client.post("/v1/chat/completions", json={"model": "priced", "messages": HELLO, "max_tokens": 20})
    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    listed = (await client.get("/api/v1/admin/budgets")).json()["budgets"]
    assert [b["id"] for b in listed] == [budget["id"]]
    spent = micro_usd(usage["prompt_tokens"], usage["completion_tokens"], IN, OUT)
    assert (listed[0]["spent_micro_usd"], listed[0]["reserved_micro_usd"]) == (spent, 0)
    assert listed[0]["remaining_micro_usd"] == 7_123_456 - spent

    reset = await client.post(f"/api/v1/admin/budgets/{budget['id']}/reset")
    assert reset.status_code == 200 and reset.json()["spent_micro_usd"] == 0
    assert (await client.delete(f"/api/v1/admin/budgets/{budget['id']}")).status_code == 204
    assert (await client.get("/api/v1/admin/budgets")).json() == {"budgets": []}
    assert (await client.delete(f"/api/v1/admin/budgets/{budget['id']}")).status_code == 404

    async with app.services.db.system_session() as session:
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.action.like("budget.%"))
                                        .order_by(AuditEvent.id))).all()
    assert [e.action for e in events] == ["budget.set", "budget.set", "budget.reset", "budget.delete"]
    assert all(e.org_id == org and e.target_id == budget["id"] and e.actor_key_id for e in events)
    assert events[1].details is not None and events[1].details["previous_limit_micro_usd"] == 5_000_000
    assert events[2].details is not None and events[2].details["spent_micro_usd_before"] == spent


async def test_one_tenant_never_sees_nor_touches_anothers_budgets(app: RunningApp) -> None:
    client, org = app.client, await org_of(app)
    _, key_a, user_a = await new_key(app.services, org)
    mine = (await put_budget(client, scope="user", subject_id=user_a, period="month", limit_usd="1")).json()
    other = await new_org(app.services)
    other_admin, other_key, other_user = await new_key(app.services, other, role="admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://atrium.test",
                                 headers=bearer(other_admin)) as theirs:
        assert (await theirs.get("/api/v1/admin/budgets")).json() == {"budgets": []}
        assert (await theirs.delete(f"/api/v1/admin/budgets/{mine['id']}")).status_code == 404
        assert (await theirs.post(f"/api/v1/admin/budgets/{mine['id']}/reset")).status_code == 404
        for body in ({"scope": "user", "subject_id": user_a}, {"scope": "key", "subject_id": key_a},
                     {"scope": "org", "subject_id": org}):
            refused = await put_budget(theirs, period="day", limit_usd="1", **body)
            assert refused.status_code == 404, body
            assert refused.json()["error"]["code"] == "not_found"
        own = await put_budget(theirs, scope="key", subject_id=other_key, period="day", limit_usd="1")
        assert own.status_code == 201
    assert [b["id"] for b in (await client.get("/api/v1/admin/budgets")).json()["budgets"]] == [mine["id"]]
    assert other_user is not None


async def test_a_user_of_two_orgs_gets_a_separate_user_budget_in_each(app: RunningApp) -> None:
    client, org = app.client, await org_of(app)
    _, _, user = await new_key(app.services, org)
    assert user is not None
    other = await new_org(app.services)
    other_admin, _, _ = await new_key(app.services, other, role="admin")
    async with app.services.db.system_session() as session:
        session.add(Membership(org_id=other, user_id=user, role="member"))
    mine = await put_budget(client, scope="user", subject_id=user, period="day", limit_usd="1")
    assert mine.status_code == 201, mine.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://atrium.test",
                                 headers=bearer(other_admin)) as theirs:
        their = await put_budget(theirs, scope="user", subject_id=user, period="day", limit_usd="2")
        assert their.status_code == 201, their.text
        assert their.json()["id"] != mine.json()["id"] and their.json()["limit_micro_usd"] == 2_000_000
        assert [b["limit_micro_usd"] for b in (await theirs.get("/api/v1/admin/budgets")).json()["budgets"]] \
            == [2_000_000]
    assert [b["limit_micro_usd"] for b in (await client.get("/api/v1/admin/budgets")).json()["budgets"]] \
        == [1_000_000]


@pytest.mark.parametrize("body", [
    {"scope": "team", "period": "day", "limit_usd": "1"},
    {"scope": "org", "period": "week", "limit_usd": "1"},
    {"scope": "org", "period": "day", "limit_usd": "-1"},
    {"scope": "org", "period": "day", "limit_usd": "0.0000001"},
    {"scope": "org", "period": "day", "limit_usd": "1", "extra": True},
    {"scope": "user", "period": "day", "limit_usd": "1"},  # no subject
    {"scope": "key", "subject_id": "x" * 33, "period": "day", "limit_usd": "1"},
])
async def test_bad_budget_bodies_are_refused_as_typed_errors(app: RunningApp, body: dict[str, Any]) -> None:
    reply = await put_budget(app.client, **body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "invalid_request"


async def test_members_see_their_own_budgets_but_cannot_administer(app: RunningApp) -> None:
    client, org = app.client, await org_of(app)
    member, key_id, _ = await new_key(app.services, org)
    _, other_key_id, _ = await new_key(app.services, org)
    await put_budget(client, scope="org", period="month", limit_usd="10")
    await put_budget(client, scope="key", subject_id=key_id, period="day", limit_usd="1")
    await put_budget(client, scope="key", subject_id=other_key_id, period="day", limit_usd="2")
    headers = bearer(member)
    assert (await client.get("/api/v1/admin/budgets", headers=headers)).status_code == 403
    assert (await client.put("/api/v1/admin/budgets", headers=headers,
                             json={"scope": "org", "period": "day", "limit_usd": "1"})).status_code == 403
    own = (await client.get("/api/v1/budget", headers=headers)).json()
    assert own["enforced"] is True
    assert sorted((b["scope"], b["limit_usd"]) for b in own["budgets"]) == [("key", 1.0), ("org", 10.0)]


async def test_a_used_up_budget_refuses_chat_and_query_with_402_before_any_work(app: RunningApp) -> None:
    client = app.client
    await put_budget(client, scope="org", period="total", limit_usd="0")
    async with app.services.db.system_session() as session:
        conversations = await session.scalar(select(func.count()).select_from(Conversation))
    for path, body in (("/api/v1/chat/ask", {"message": "Anything?"}), ("/api/v1/query", {"question": "Anything?"})):
        refused = await client.post(path, json=body)
        assert refused.status_code == 402, refused.text
        error = refused.json()["error"]
        assert error["code"] == "budget_exceeded" and "org budget for all time is used up" in error["message"]
        assert error["request_id"] == refused.headers["x-request-id"]
    async with app.services.db.system_session() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == conversations


async def test_over_budget_the_openai_sdk_raises_a_402_insufficient_quota(live: LiveServer,
                                                                           upstream: FaultUpstream) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(ADMIN_KEY)) as client:
        await put_budget(client, scope="org", period="day", limit_usd="0.001")  # 1000 micro-USD
    sdk = await asyncio.to_thread(openai.AsyncOpenAI, base_url=f"{live.url}/v1", api_key=ADMIN_KEY)
    calls = upstream.count("ok")
    async with sdk:
        # 20 completion tokens at 200 micro-USD each cannot fit; nothing is spent yet (the reservation refuses).
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.chat.completions.create(model="priced", messages=HELLO, max_tokens=20)  # type: ignore[arg-type]
        assert not isinstance(refused.value, openai.RateLimitError)  # a 402: the SDK does not retry it
        assert refused.value.status_code == 402 and refused.value.code == "insufficient_quota"
        assert refused.value.type == "insufficient_quota" and "org budget" in refused.value.message
        with pytest.raises(openai.APIStatusError) as streamed:
            await sdk.chat.completions.create(model="priced", messages=HELLO, max_tokens=20,  # type: ignore[arg-type]
                                              stream=True)
        assert streamed.value.status_code == 402
    assert upstream.count("ok") == calls


async def test_over_budget_the_anthropic_sdk_raises_a_402_billing_error(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(ADMIN_KEY)) as client:
        await put_budget(client, scope="org", period="day", limit_usd="0.001")
    sdk = await asyncio.to_thread(anthropic.AsyncAnthropic, base_url=live.url, api_key=ADMIN_KEY, max_retries=0)
    async with sdk:
        with pytest.raises(anthropic.APIStatusError) as refused:
            await sdk.messages.create(model="claude-priced", max_tokens=20, messages=HELLO)  # type: ignore[arg-type]
    assert refused.value.status_code == 402
    assert isinstance(refused.value.body, dict) and refused.value.body["error"]["type"] == "billing_error"


async def test_a_client_that_hangs_up_mid_stream_is_charged_what_streamed(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(ADMIN_KEY), timeout=10) as client:
        budget = (await put_budget(client, scope="org", period="day", limit_usd="100")).json()
        first = ""
        async with client.stream("POST", "/v1/chat/completions", json={
                "model": "priced-stall", "messages": HELLO, "max_tokens": 50, "stream": True}) as reply:
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"]
                    if delta.get("content"):
                        first = delta["content"]
                        break
        # The upstream stalls after one token; the client has gone: the call must end and settle.
        assert first
        counter = live.services.gateway.counter
        from atrium.gateway.ports import ChatMessage

        expected = micro_usd(counter.count_messages((ChatMessage("user", HELLO[0]["content"]),)),
                             counter.count(first), IN, OUT)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with live.services.db.system_session() as session:
                row = await session.scalar(select(BudgetSpend).where(BudgetSpend.budget_id == budget["id"]))
            if row is not None and row.reserved_micro_usd == 0 and row.spent_micro_usd:
                break
            assert asyncio.get_running_loop().time() < deadline, "the hung-up call never settled"
            await asyncio.sleep(0.05)
        assert row.spent_micro_usd == expected


async def test_tokens_per_minute_refuse_a_spent_window_with_quota_headers(tmp_path: Path,
                                                                          upstream: FaultUpstream) -> None:
    settings = await settings_for(tmp_path, upstream, rate_limits={"key_tokens_per_minute": 40})
    async with run_app(settings, configured=True) as running:
        client, org = running.client, await org_of(running)
        body = {"model": "priced", "messages": HELLO, "max_tokens": 50}
        used, remaining = 0, []
        for _ in range(10):
            reply = await client.post("/v1/chat/completions", json=body)
            if reply.status_code != 200:
                break
            assert reply.headers["x-ratelimit-limit-tokens"] == "40"
            remaining.append(int(reply.headers["x-ratelimit-remaining-tokens"]))
            used += reply.json()["usage"]["total_tokens"]
        assert reply.status_code == 429, reply.text
        assert used >= 40 and remaining == sorted(remaining, reverse=True) and remaining[0] == 40
        assert reply.headers["x-ratelimit-scope"] == "key_tokens"
        assert reply.headers["x-ratelimit-remaining-tokens"] == "0"
        assert 1 <= int(reply.headers["retry-after"]) <= 60
        assert reply.json()["error"]["code"] == "rate_limit_exceeded"  # OpenAI's shape on /v1
        # A key with its own, lower limit is refused sooner; the admin key is not affected by it.
        small, _, _ = await new_key(running.services, org, tokens_per_minute=5)
        assert (await client.post("/v1/chat/completions", json=body, headers=bearer(small))).status_code == 200
        again = await client.post("/api/v1/query", json={"question": "Hi?"}, headers=bearer(small))
        assert again.status_code == 429 and again.json()["error"]["code"] == "rate_limited"
        assert again.headers["x-ratelimit-limit-tokens"] == "5"


async def test_an_admin_reset_lets_a_refused_caller_in_again(app: RunningApp) -> None:
    client = app.client
    # Each call reserves a little over 4,000 micro-USD (20 tokens at 200) and costs about 3,400.
    budget = (await put_budget(client, scope="org", period="day", limit_usd="0.01")).json()
    body = {"model": "priced", "messages": HELLO, "max_tokens": 20}
    statuses = [(await client.post("/v1/chat/completions", json=body)).status_code for _ in range(5)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 402
    assert (await client.post(f"/api/v1/admin/budgets/{budget['id']}/reset")).status_code == 200
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200


async def test_a_chat_question_the_budget_cannot_cover_is_refused_with_402(app: RunningApp) -> None:
    await ingest(app.client)  # with context, the answer needs the model
    await put_budget(app.client, scope="org", period="day", limit_usd="0.001")  # not used up: the edge admits
    refused = await app.client.post("/api/v1/chat/ask", json={"message": "How are refunds issued?"})
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"


async def test_a_division_admin_manages_only_its_divisions_budgets_and_not_the_policy(app: RunningApp) -> None:
    """Issue 11 item 4: org budgets, other divisions' (or unscoped) users' and keys' budgets and the guard
    policy are organisation-wide settings; a division-scoped admin reads the org budget and the policy."""
    owner, org = app.client, await org_of(app)

    async def made(response: httpx.Response, status: int = 201) -> dict[str, Any]:
        assert response.status_code == status, response.text
        return dict(response.json())

    north = await made(await owner.post("/api/v1/admin/divisions", json={"name": "North"}))
    south = await made(await owner.post("/api/v1/admin/divisions", json={"name": "South"}))
    users = {}
    for name, role, division in (("lead", "admin", north), ("n", "member", north), ("s", "member", south),
                                 ("u", "member", None)):
        users[name] = await made(await owner.post("/api/v1/admin/users", json={
            "email": f"{name}@example.org", "name": name, "role": role,
            **({"division_id": division["id"]} if division else {})}))
    keys = {name: await made(await owner.post("/api/v1/admin/keys", json={"name": name, "user_id": users[name]["id"]}))
            for name in users}
    userless = await made(await owner.post("/api/v1/admin/keys", json={"name": "free", "role": "member"}))
    org_budget = await made(await put_budget(owner, scope="org", period="month", limit_usd="100"))
    south_budget = await made(await put_budget(owner, scope="user", subject_id=users["s"]["id"], period="month",
                                               limit_usd="5"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://atrium.test",
                                 headers=bearer(keys["lead"]["key"])) as lead:
        for body in ({"scope": "org"}, {"scope": "org", "subject_id": org},
                     {"scope": "user", "subject_id": users["s"]["id"]},
                     {"scope": "user", "subject_id": users["u"]["id"]},
                     {"scope": "key", "subject_id": keys["s"]["id"]},
                     {"scope": "key", "subject_id": userless["id"]}):
            refused = await put_budget(lead, period="day", limit_usd="1", **body)
            assert refused.status_code == 403, (body, refused.text)
            assert refused.json()["error"]["code"] == "forbidden"
        mine = await made(await put_budget(lead, scope="user", subject_id=users["n"]["id"], period="day",
                                           limit_usd="2"))
        key_budget = await made(await put_budget(lead, scope="key", subject_id=keys["n"]["id"], period="day",
                                                 limit_usd="1"))
        listed = {b["id"] for b in (await made(await lead.get("/api/v1/admin/budgets"), 200))["budgets"]}
        assert listed == {org_budget["id"], mine["id"], key_budget["id"]}  # not South's
        for budget in (org_budget, south_budget):
            assert (await lead.delete(f"/api/v1/admin/budgets/{budget['id']}")).status_code == 403
            assert (await lead.post(f"/api/v1/admin/budgets/{budget['id']}/reset")).status_code == 403
        assert (await lead.post(f"/api/v1/admin/budgets/{mine['id']}/reset")).status_code == 200
        assert (await lead.delete(f"/api/v1/admin/budgets/{key_budget['id']}")).status_code == 204
        # The guard policy: read, not changed.
        assert (await lead.get("/api/v1/admin/policy")).status_code == 200
        refused = await lead.put("/api/v1/admin/policy", json={"output": {"link_domains": ["evil.example"]}})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    listed = {b["id"] for b in (await made(await owner.get("/api/v1/admin/budgets"), 200))["budgets"]}
    assert listed == {org_budget["id"], south_budget["id"], mine["id"]}
    policy = await made(await owner.get("/api/v1/admin/policy"), 200)
    assert "evil.example" not in json.dumps(policy)
    changed = await owner.put("/api/v1/admin/policy", json={"output": {"link_domains": ["ok.example"]}})
    assert changed.status_code == 200, changed.text
