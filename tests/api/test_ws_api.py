"""``WS /ws`` over real HTTP (uvicorn on loopback) with a real WebSocket client (``websockets``): auth by
header, subprotocol and query (and refusal), chat streamed and stored, ping, malformed and oversize
messages, the message rate limit, budgets, another tenant's conversation, a client leaving mid-answer,
guardrails, one chat at a time, and a revoked key ending the socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from atrium.app import create_app
from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest
from atrium.gateway.providers.fake import FakeChatModel
from atrium.store.models import Conversation, Membership, Message, UsageRecord, User
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings
from tests.fault_upstream import FaultUpstream
from tests.tenancy_helpers import create_tenant

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUESTION = "How long do refunds take?"
ANSWER_PART = "Refunds are issued within 14 days of a purchase. [1]"


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, model: ChatModel | None = None, *, configured: bool = False,
                **overrides: Any) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    """The app on a loopback port (``configured``: its models from ``overrides['gateway']``) and an HTTP
    client authenticated as the admin, with the demo documents ingested."""
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", **overrides)
    app = create_app(settings, chat_model=None if configured else model or FakeChatModel())
    async with LiveServer(app, free_port()) as server, \
            httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        await ingest(client)
        yield server, client


def socket(server: LiveServer, *, query: str = "", **kwargs: Any) -> Any:
    return connect(f"{server.ws_url}/ws{query}", open_timeout=10, **kwargs)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return event


async def ready(ws: ClientConnection) -> dict[str, Any]:
    event = await receive(ws)
    assert event["type"] == "ready", event
    return event


async def answer(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """Every event of one chat, up to its ``done`` or ``error``."""
    events = []
    while True:
        event = await receive(ws)
        assert event["id"] == request_id, event
        events.append(event)
        if event["type"] in ("done", "error"):
            return events


async def chat(ws: ClientConnection, request_id: str, message: str = QUESTION, **fields: Any) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "chat", "id": request_id, "message": message, **fields}))
    return await answer(ws, request_id)


def error_of(event: dict[str, Any], code: str) -> dict[str, Any]:
    assert event["type"] == "error", event
    error: dict[str, Any] = event["error"]
    assert error["code"] == code and error["message"] and error["request_id"], event
    return error


async def refused_with(server: LiveServer, code: int, **kwargs: Any) -> None:
    async with socket(server, **kwargs) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)  # closed before any event: not even "ready"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, closed.value


async def messages_of(server: LiveServer, conversation_id: str) -> list[Message]:
    async with server.services.db.system_session() as session:
        rows = await session.scalars(select(Message).where(Message.conversation_id == conversation_id)
                                     .order_by(Message.created_at, Message.id))
        return list(rows)


async def stored(server: LiveServer, message_id: str) -> Message:
    """The assistant message once its run has ended."""
    for _ in range(200):
        async with server.services.db.system_session() as session:
            row = await session.get(Message, message_id)
        assert row is not None
        if row.status != "pending":
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("the answer was never stored")


# --- auth ------------------------------------------------------------------------------------------------

async def test_a_socket_without_or_with_a_bad_credential_is_closed_4401(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        await refused_with(server, 4401)
        await refused_with(server, 4401, additional_headers={"Authorization": "Bearer atr_" + "x" * 40})
        await refused_with(server, 4401, subprotocols=["atrium.bearer", "atr_" + "y" * 40])
        await refused_with(server, 4401, query="?access_token=not-a-credential")


async def test_header_subprotocol_and_query_credentials_open_the_socket(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serve(tmp_path) as (server, client):
        async with socket(server, additional_headers=AUTH) as ws:
            event = await ready(ws)
            assert event["request_id"] and event["limits"]["max_message_bytes"] == 65_536
        async with socket(server, subprotocols=["atrium.bearer", ADMIN_KEY]) as ws:
            assert ws.subprotocol == "atrium.bearer"  # never the credential
            await ready(ws)
        async with socket(server, query=f"?access_token={ADMIN_KEY}") as ws:
            await ready(ws)
        # An access token (a JWT: dots and all) through the subprotocol, as a browser sends it.
        async with server.services.db.system_session() as session:
            org_id = (await client.get("/api/v1/admin/org")).json()["id"]
            user = User(org_id=org_id, email="ws.user@example.org", name="WS User", role="member",
                        password_hash=await server.services.sessions.passwords.hash("ws-password-123"))
            session.add(user)
            await session.flush()
            session.add(Membership(org_id=org_id, user_id=user.id, role="member"))
        login = await client.post("/api/v1/auth/token", json={"email": "ws.user@example.org",
                                                              "password": "ws-password-123"})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        async with socket(server, subprotocols=["atrium.bearer", token]) as ws:
            await ready(ws)
            assert (await chat(ws, "jwt"))[-1]["type"] == "done"
    # uvicorn logs the path of every socket; the query credential is masked there.
    assert "/ws?access_token=" in caplog.text
    assert ADMIN_KEY not in caplog.text and token not in caplog.text


async def test_anonymous_only_when_allowed(tmp_path: Path) -> None:
    async with serve(tmp_path, auth={"allow_anonymous": True}) as (server, _), socket(server) as ws:
        await ready(ws)
        assert (await chat(ws, "anon"))[-1]["type"] == "done"


# --- chat ------------------------------------------------------------------------------------------------

class _Witness(FakeChatModel):
    """The fake model, noting for each call whether the question was already stored when it was called."""

    def __init__(self) -> None:
        super().__init__(token_delay=0.01)
        self.server: LiveServer | None = None
        self.question_stored: list[bool] = []

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        assert self.server is not None
        async with self.server.services.db.system_session() as session:
            latest = await session.scalar(select(Message.content).where(Message.role == "user")
                                          .order_by(Message.created_at.desc()).limit(1))
        self.question_stored.append(latest is not None and latest in request.messages[-1].text)
        async for event in super().stream(request):
            yield event


async def test_chat_streams_tokens_and_done_and_stores_both_messages(tmp_path: Path) -> None:
    model = _Witness()
    async with serve(tmp_path, model) as (server, client):
        model.server = server
        async with socket(server, additional_headers=AUTH) as ws:
            await ready(ws)
            events = await chat(ws, "q1")
            types = [event["type"] for event in events]
            assert types[0] == "start" and types[-2:] == ["sources", "done"]
            assert set(types[1:-2]) == {"token"} and len(types) > 5
            start, done = events[0], events[-1]
            assert "".join(event["text"] for event in events if event["type"] == "token") == done["answer"]
            assert done["answer"].endswith(ANSWER_PART)
            assert events[-2]["sources"][0]["source"] == "billing.md" and events[-2]["sources"][0]["cited"]
            assert done["message_id"] == start["message_id"] and done["usage"]["completion_tokens"] > 0
            follow_up = await chat(ws, "q2", "And when are invoices sent?",
                                   conversation_id=start["conversation_id"])
            assert follow_up[-1]["type"] == "done" and follow_up[0]["conversation_id"] == start["conversation_id"]
        rows = await messages_of(server, start["conversation_id"])
        assert [(row.role, row.status) for row in rows] == [("user", "complete"), ("assistant", "complete")] * 2
        assert rows[0].id == start["user_message_id"] and rows[0].content == QUESTION
        assert rows[1].content == done["answer"]
        assert model.question_stored and all(model.question_stored)
        # Listed like any conversation, and metered under the socket's endpoint.
        listed = (await client.get(f"/api/v1/conversations/{start['conversation_id']}/messages")).json()
        assert len(listed["messages"]) == 4
        await server.services.gateway.recorder.flush()
        async with server.services.db.system_session() as session:
            endpoints = set(await session.scalars(select(UsageRecord.endpoint)))
        assert "/ws" in endpoints


async def test_ping_bad_and_oversize_messages_get_typed_errors_and_the_socket_stays_open(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _), socket(server, additional_headers=AUTH) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert await receive(ws) == {"type": "pong", "id": "p1"}
        bad: list[tuple[str | bytes, str, str | None]] = [
            ("{not json", "invalid_request", None),
            ("[1, 2]", "invalid_request", None),
            (json.dumps({"type": "dance", "id": "d1"}), "invalid_request", "d1"),
            (json.dumps({"type": "chat", "id": "c1"}), "invalid_request", "c1"),
            (json.dumps({"type": "chat", "id": "c2", "message": "hi", "atr_secret_field_name": 1}),
             "invalid_request", "c2"),
            (json.dumps({"type": "chat", "id": "c3", "message": "x" * 9000}), "payload_too_large", "c3"),
            (json.dumps({"type": "chat", "id": "c4", "message": "hi", "collection": "../etc"}),
             "invalid_request", "c4"),
            (b'{"type": "ping"}', "invalid_request", None),
            (json.dumps({"type": "ping", "pad": "x" * 70_000}), "payload_too_large", None),
        ]
        for message, code, request_id in bad:
            await ws.send(message)
            event = await receive(ws)
            error = error_of(event, code)
            assert event["id"] == request_id, event
            assert "atr_secret_field_name" not in error["message"] and "etc" not in error["message"]
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong", "id": None}
        # Far over the limit: the socket is closed as "message too big".
        await ws.send(json.dumps({"type": "ping", "pad": "x" * (65_536 * 16)}))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_every_message_counts_against_the_message_rate_limit(tmp_path: Path) -> None:
    async with serve(tmp_path, rate_limits={"ws_messages_per_minute": 3}) as (server, _), \
            socket(server, additional_headers=AUTH) as ws:
        await ready(ws)
        await ws.send("{garbage")  # counted too
        assert (await receive(ws))["error"]["code"] == "invalid_request"
        for n in range(2):
            await ws.send(json.dumps({"type": "ping", "id": f"p{n}"}))
            assert (await receive(ws))["type"] == "pong"
        for request in ({"type": "ping", "id": "p9"}, {"type": "chat", "id": "c1", "message": QUESTION}):
            await ws.send(json.dumps(request))
            event = await receive(ws)
            error = error_of(event, "rate_limited")
            assert 1 <= error["retry_after"] <= 60 and "WebSocket messages" in error["message"]
        async with server.services.db.system_session() as session:
            assert await session.scalar(select(func.count()).select_from(Conversation)) == 0


# --- budgets and guardrails ------------------------------------------------------------------------------

def _priced(upstream: FaultUpstream) -> dict[str, Any]:
    price = {"input_price_per_1m": 100.0, "output_price_per_1m": 200.0}
    return {"providers": {"up": {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-up-0123456789ab"}},
            "models": {"priced": {"provider": "up", "model": "ok", **price}}, "default_model": "priced",
            "retry": {"attempts": 1, "initial_delay_s": 0, "jitter_s": 0}, "cache": {"enabled": False}}


async def test_a_budget_refuses_a_chat_over_the_socket(tmp_path: Path, upstream: FaultUpstream) -> None:
    async with serve(tmp_path, configured=True, gateway=_priced(upstream)) as (server, client), \
            socket(server, additional_headers=AUTH) as ws:
        await ready(ws)
        assert (await chat(ws, "paid"))[-1]["type"] == "done"  # spends a little
        # Not used up, but the next answer cannot fit: refused by the gateway's reservation, in the run.
        put = await client.put("/api/v1/admin/budgets", json={"scope": "org", "period": "day", "limit_usd": "0.01"})
        assert put.status_code == 201, put.text
        events = await chat(ws, "over")
        error_of(events[-1], "budget_exceeded")
        assert (await stored(server, events[0]["message_id"])).error["code"] == "budget_exceeded"  # type: ignore[index]
        # Used up: refused at the edge, before anything is stored.
        await client.put("/api/v1/admin/budgets", json={"scope": "org", "period": "total", "limit_usd": "0"})
        async with server.services.db.system_session() as session:
            before = await session.scalar(select(func.count()).select_from(Message))
        event = (await chat(ws, "edge"))[-1]
        assert "used up" in error_of(event, "budget_exceeded")["message"]
        async with server.services.db.system_session() as session:
            assert await session.scalar(select(func.count()).select_from(Message)) == before
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"


async def test_a_blocked_question_is_an_error_event(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client), socket(server, additional_headers=AUTH) as ws:
        policy = await client.put("/api/v1/admin/policy", json={"moderation": {"blocklist": ["project nightingale"]}})
        assert policy.status_code == 200, policy.text
        await ready(ws)
        events = await chat(ws, "b1", "What is Project Nightingale?")
        error = error_of(events[-1], "content_blocked")
        assert "nightingale" not in error["message"].lower()
        assert (await chat(ws, "b2"))[-1]["type"] == "done"


# --- tenants, disconnects, concurrency, revocation -------------------------------------------------------

async def test_another_tenants_conversation_is_not_found_and_untouched(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        async with socket(server, additional_headers=AUTH) as ws:
            await ready(ws)
            conversation = (await chat(ws, "a"))[0]["conversation_id"]
        other = await create_tenant(server.services.db, "Other")
        async with socket(server, subprotocols=["atrium.bearer", other.raw_key]) as ws:
            await ready(ws)
            await ws.send(json.dumps({"type": "chat", "id": "x", "message": "Append to it",
                                      "conversation_id": conversation}))
            frame = await asyncio.wait_for(ws.recv(), 10)
            error_of(json.loads(frame), "not_found")
            assert "14 days" not in str(frame)
            # Asked plainly, the other tenant is answered from its own (empty) knowledge only.
            done = (await chat(ws, "plain"))[-1]
            assert done["type"] == "done" and "14 days" not in done["answer"]
        assert len(await messages_of(server, conversation)) == 2


async def test_an_answer_is_stored_whole_when_the_client_leaves_mid_answer(tmp_path: Path) -> None:
    async with serve(tmp_path, FakeChatModel(token_delay=0.05)) as (server, _):
        async with socket(server, additional_headers=AUTH) as ws:
            await ready(ws)
            await ws.send(json.dumps({"type": "chat", "id": "gone", "message": QUESTION}))
            start = await receive(ws)
            assert (await receive(ws))["type"] == "token"
        async with server.services.db.system_session() as session:
            left_at = await session.get(Message, start["message_id"])
        assert left_at is not None and left_at.status == "pending"  # the client left mid-answer
        row = await stored(server, start["message_id"])
        assert row.status == "complete" and row.content.endswith(ANSWER_PART)


async def test_one_chat_at_a_time_per_socket(tmp_path: Path) -> None:
    async with serve(tmp_path, FakeChatModel(token_delay=0.05)) as (server, _), \
            socket(server, additional_headers=AUTH) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "chat", "id": "first", "message": QUESTION}))
        assert (await receive(ws))["type"] == "start"
        await ws.send(json.dumps({"type": "chat", "id": "second", "message": QUESTION}))
        await ws.send(json.dumps({"type": "ping", "id": "during"}))
        events: list[dict[str, Any]] = []
        while not events or events[-1].get("id") != "first" or events[-1]["type"] not in ("done", "error"):
            events.append(await receive(ws))
        busy = [event for event in events if event["id"] == "second"]
        assert len(busy) == 1 and error_of(busy[0], "busy")
        assert {"type": "pong", "id": "during"} in events  # answered while the chat streams
        assert events[-1]["type"] == "done"
        assert (await chat(ws, "third"))[-1]["type"] == "done"


async def test_a_revoked_key_ends_the_socket_at_its_next_chat(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client):
        created = await client.post("/api/v1/admin/keys", json={"name": "ws"})
        assert created.status_code == 201, created.text
        async with socket(server, additional_headers={"Authorization": f"Bearer {created.json()['key']}"}) as ws:
            await ready(ws)
            assert (await chat(ws, "ok"))[-1]["type"] == "done"
            assert (await client.delete(f"/api/v1/admin/keys/{created.json()['id']}")).status_code == 204
            await ws.send(json.dumps({"type": "chat", "id": "after", "message": QUESTION}))
            error_of(await receive(ws), "unauthorized")
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
