"""``WS /ws`` as the realtime channel, over real sockets (uvicorn on loopback, the ``websockets`` client):
presence per organisation, typing to those who may read the conversation or thread (never a same-org user
without access, never another organisation), artifact and job events to their readers, a client that
never reads does not hold up the others, the per-user socket limit, the heartbeat closing a silent
socket (across processes: tests/integration/test_ws_replicas.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket as sockets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from atrium.accounts.api_keys import create_key
from atrium.realtime.ports import Audience, Event
from atrium.store.models import Membership, User
from tests.api.helpers import upload, wait_job
from tests.api.test_ws_api import AUTH, ready, receive, refused_with, serve, socket
from tests.conftest import ADMIN_KEY, LiveServer
from tests.tenancy_helpers import create_tenant


async def colleague(server: LiveServer, client: httpx.AsyncClient, name: str = "Bea") -> tuple[str, str]:
    """Another member of the admin's organisation: (user id, API key)."""
    org_id = (await client.get("/api/v1/admin/org")).json()["id"]
    async with server.services.db.system_session() as session:
        user = User(org_id=org_id, email=f"{name.lower()}@example.org", name=name, role="member")
        session.add(user)
        await session.flush()
        session.add(Membership(org_id=org_id, user_id=user.id, role="member"))
        _, raw = await create_key(session, org_id=org_id, user_id=user.id, role="member",
                                  name=f"{name} key")
    return user.id, raw


def as_key(key: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {key}"}}


async def next_of(ws: ClientConnection, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
    """The next event of ``kind`` (and with ``match``'s values), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if event["type"] == kind and all(event.get(key) == value for key, value in match.items()):
            return event


async def none_of(ws: ClientConnection, kind: str, within: float = 0.6) -> None:
    """No event of ``kind`` arrives within ``within`` seconds."""
    with contextlib.suppress(TimeoutError):
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), within))
            assert event["type"] != kind, event


async def conversation_of(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})
    assert response.status_code == 200, response.text
    return str(response.json()["conversation_id"])


# --- presence --------------------------------------------------------------------------------------------

async def test_presence_join_leave_and_list_stay_in_the_organisation(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client), socket(server, additional_headers=AUTH) as admin:
        me = (await ready(admin))["you"]
        bea_id, bea_key = await colleague(server, client)
        outsider = await create_tenant(server.services.db, "Other")
        async with socket(server, **as_key(bea_key)) as bea:
            await ready(bea)
            joined = await next_of(admin, "presence", event="join")
            assert joined["user"] == {"id": bea_id, "name": "Bea"}
            await bea.send(json.dumps({"type": "presence", "id": "who"}))
            listed = await next_of(bea, "presence", id="who")
            assert {user["id"] for user in listed["users"]} == {bea_id, me["id"]}
            async with socket(server, **as_key(outsider.raw_key)) as other:
                await ready(other)
                await other.send(json.dumps({"type": "presence", "id": "who"}))
                assert [user["id"] for user in (await next_of(other, "presence", id="who"))["users"]] == \
                    [outsider.user_id]
                await none_of(admin, "presence")  # the other organisation's user never shows
        left = await next_of(admin, "presence", event="leave")
        assert left["user"]["id"] == bea_id


# --- typing ----------------------------------------------------------------------------------------------

async def test_typing_reaches_who_may_read_the_conversation_or_thread_only(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client):
        conversation_id = await conversation_of(client)
        _, bea_key = await colleague(server, client)
        outsider = await create_tenant(server.services.db, "Other")
        async with socket(server, additional_headers=AUTH) as mine, \
                socket(server, additional_headers=AUTH) as my_other, \
                socket(server, **as_key(bea_key)) as bea, socket(server, **as_key(outsider.raw_key)) as other:
            for ws in (mine, my_other, bea, other):
                await ready(ws)
            await mine.send(json.dumps({"type": "typing", "conversation_id": conversation_id}))
            typing = await next_of(my_other, "typing")
            assert typing["conversation_id"] == conversation_id and typing["state"] == "start" and typing["ts"]
            for ws in (mine, bea, other):  # not the typist itself, not a colleague, not another org
                await none_of(ws, "typing")
            # Someone who may not read the conversation cannot type into it (nor learn it exists).
            await bea.send(json.dumps({"type": "typing", "id": "t", "conversation_id": conversation_id}))
            assert (await next_of(bea, "error", id="t"))["error"]["code"] == "not_found"
            await other.send(json.dumps({"type": "typing", "id": "t", "conversation_id": conversation_id}))
            assert (await next_of(other, "error", id="t"))["error"]["code"] == "not_found"
            await none_of(my_other, "typing")

            # An agent thread the organisation may read: its subscribers hear typing; a private one's
            # typing reaches nobody but its owner, even a subscriber from before it became private.
            thread = (await client.post("/threads", json={"visibility": "org"})).json()["thread_id"]
            for ws in (bea, my_other):
                await ws.send(json.dumps({"type": "subscribe", "id": "s", "thread_id": thread}))
                assert (await next_of(ws, "subscribed", id="s"))["thread_id"] == thread
            await other.send(json.dumps({"type": "subscribe", "id": "s", "thread_id": thread}))
            assert (await next_of(other, "error", id="s"))["error"]["code"] == "not_found"
            await mine.send(json.dumps({"type": "typing", "thread_id": thread, "state": "stop"}))
            assert (await next_of(bea, "typing"))["thread_id"] == thread
            assert (await next_of(my_other, "typing"))["state"] == "stop"
            assert (await client.patch(f"/threads/{thread}", json={"visibility": "private"})).status_code == 200
            await mine.send(json.dumps({"type": "typing", "thread_id": thread}))
            await next_of(my_other, "typing")
            await none_of(bea, "typing")
            await none_of(other, "typing")


async def test_a_socket_follows_at_most_max_subscriptions_threads(tmp_path: Path) -> None:
    async with serve(tmp_path, realtime={"max_subscriptions": 2}) as (server, client), \
            socket(server, additional_headers=AUTH) as ws:
        await ready(ws)
        threads = [(await client.post("/threads", json={})).json()["thread_id"] for _ in range(3)]
        for number, thread in enumerate(threads):
            await ws.send(json.dumps({"type": "subscribe", "id": f"s{number}", "thread_id": thread}))
        await next_of(ws, "subscribed", id="s0")
        await next_of(ws, "subscribed", id="s1")
        assert (await next_of(ws, "error", id="s2"))["error"]["code"] == "too_many_subscriptions"


# --- artifacts and jobs ----------------------------------------------------------------------------------

async def test_artifact_events_reach_its_readers_only(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client):
        _, bea_key = await colleague(server, client)
        outsider = await create_tenant(server.services.db, "Other")
        async with socket(server, additional_headers=AUTH) as mine, socket(server, **as_key(bea_key)) as bea, \
                socket(server, **as_key(outsider.raw_key)) as other:
            for ws in (mine, bea, other):
                await ready(ws)
            body = {"kind": "markdown", "title": "Plan", "content": {"text": "# Plan"}}
            private = (await client.post("/api/v1/artifacts", json=body)).json()
            event = await next_of(mine, "artifact")
            assert event["change"] == "created" and event["artifact"]["id"] == private["id"]
            assert event["artifact"]["version"] == 1 and event["artifact"]["title"] == "Plan"
            await none_of(bea, "artifact")
            shared = (await client.post("/api/v1/artifacts", json={**body, "visibility": "org"})).json()
            assert (await next_of(bea, "artifact"))["artifact"]["id"] == shared["id"]
            assert (await next_of(mine, "artifact"))["artifact"]["id"] == shared["id"]
            assert (await client.patch(f"/api/v1/artifacts/{shared['id']}",
                                       json={"content": {"text": "# Plan v2"}})).status_code == 200
            updated = await next_of(bea, "artifact")
            assert updated["change"] == "updated" and updated["artifact"]["version"] == 2
            assert (await client.delete(f"/api/v1/artifacts/{shared['id']}")).status_code == 204
            assert (await next_of(bea, "artifact"))["change"] == "deleted"
            await none_of(other, "artifact")


async def test_job_progress_events_reach_the_documents_owner(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client):
        _, bea_key = await colleague(server, client)
        async with socket(server, additional_headers=AUTH) as mine, socket(server, **as_key(bea_key)) as bea:
            await ready(mine)
            await ready(bea)
            job_id = (await upload(client, {"new.md": "Shipping takes five days. " * 40}))["job_id"]
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["status"] not in ("succeeded", "failed"):
                event = await next_of(mine, "job")
                assert event["job"]["id"] == job_id and event["job"]["kind"] == "ingest"
                seen.append(event["job"])
            assert seen[-1]["status"] == "succeeded" and seen[-1]["progress"] == 1.0
            assert any(item["status"] == "running" and item["progress"] is not None for item in seen), seen
            assert (await wait_job(client, job_id))["status"] == "succeeded"
            await none_of(bea, "job")


async def test_a_message_event_reaches_the_owners_other_sockets(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, client), socket(server, additional_headers=AUTH) as ws:
        await ready(ws)
        conversation_id = await conversation_of(client)
        user = await next_of(ws, "message")
        assert user["conversation_id"] == conversation_id and user["message"]["role"] == "user"
        answer = await next_of(ws, "message", conversation_id=conversation_id)
        while answer["message"]["status"] == "pending":
            answer = await next_of(ws, "message", conversation_id=conversation_id)
        assert answer["message"]["role"] == "assistant" and answer["message"]["status"] == "complete"
        assert answer["message"]["content"]


# --- slow clients, limits, heartbeats --------------------------------------------------------------------

def _never_reading_socket(port: int) -> sockets.socket:
    """A WebSocket handshake done by hand on a socket with a tiny receive buffer, then never read."""
    raw = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
    raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    raw.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


async def test_a_client_that_never_reads_does_not_hold_up_the_others(tmp_path: Path) -> None:
    count, padding = 800, "x" * 8000
    async with serve(tmp_path, realtime={"outbox_events": 64, "max_dropped": 200}) as (server, client):
        org_id = (await client.get("/api/v1/admin/org")).json()["id"]
        stalled = await asyncio.to_thread(_never_reading_socket, server.server.config.port)
        try:
            async with socket(server, additional_headers=AUTH) as one, \
                    socket(server, additional_headers=AUTH) as two:
                await ready(one)
                await ready(two)
                assert server.services.realtime.sockets(org_id) == 3
                started = time.monotonic()

                async def read_all(ws: ClientConnection) -> tuple[list[int], int]:
                    """The burst's numbers received, and how many the server said it dropped (``lagged``)."""
                    numbers: list[int] = []
                    dropped = 0
                    while len(numbers) + dropped < count:
                        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if event["type"] == "test.burst":
                            numbers.append(event["n"])
                        elif event["type"] == "lagged":
                            dropped += event["dropped"]
                    return numbers, dropped

                readers = [asyncio.create_task(read_all(ws)) for ws in (one, two)]
                for n in range(count):
                    await server.services.events.publish(Event(org_id, "test.burst", {"n": n, "pad": padding},
                                                               Audience.org()))
                    if n % 8 == 0:
                        await asyncio.sleep(0.01)  # a steady stream the readers keep up with
                received = await asyncio.gather(*readers)
                # The readers got the stream in order and in time (a drop, on a busy machine, is announced),
                # while one socket read nothing.
                for numbers, dropped in received:
                    assert numbers == sorted(numbers) and len(numbers) + dropped == count
                    assert len(numbers) >= count * 0.9, (len(numbers), dropped)
                assert time.monotonic() - started < 20
                # The stalled socket overflowed and was closed; the two readers stay.
                for _ in range(100):
                    if server.services.realtime.sockets(org_id) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert server.services.realtime.sockets(org_id) == 2
                metrics = server.services.metrics.render().decode()
                assert 'atrium_ws_closed_total{reason="slow"} 1.0' in metrics
                assert 'atrium_ws_events_total{outcome="dropped"}' in metrics and "atrium_ws_sockets 2.0" in metrics
                await one.send(json.dumps({"type": "ping", "id": "p"}))
                await next_of(one, "pong", id="p")
        finally:
            stalled.close()


async def test_sockets_over_the_per_user_limit_are_refused_4429(tmp_path: Path) -> None:
    async with serve(tmp_path, realtime={"max_sockets_per_user": 2}) as (server, client), \
            socket(server, additional_headers=AUTH) as one, socket(server, additional_headers=AUTH) as two:
        await ready(one)
        await ready(two)
        await refused_with(server, 4429, additional_headers=AUTH)
        _, bea_key = await colleague(server, client)
        async with socket(server, **as_key(bea_key)) as bea:  # another user has sockets of their own
            await ready(bea)
    async with serve(tmp_path / "org", realtime={"max_sockets_per_org": 1}) as (server, client), \
            socket(server, additional_headers=AUTH) as one:
        await ready(one)
        _, bea_key = await colleague(server, client)
        await refused_with(server, 4429, **as_key(bea_key))


async def test_the_heartbeat_closes_a_silent_socket_and_keeps_an_answering_one(tmp_path: Path) -> None:
    async with serve(tmp_path, realtime={"heartbeat_s": 0.3, "heartbeat_timeout_s": 0.3}) as (server, _), \
            socket(server, additional_headers=AUTH) as silent, socket(server, additional_headers=AUTH) as alive:
        await ready(silent)
        await ready(alive)

        async def answer_pings() -> None:
            while True:
                event = json.loads(await alive.recv())
                if event["type"] == "ping":
                    await alive.send(json.dumps({"type": "pong", "id": event["id"]}))

        answering = asyncio.create_task(answer_pings())
        try:
            assert (await next_of(silent, "ping"))["id"].startswith("hb-")  # pinged, never answers
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await receive(silent)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
            assert 'atrium_ws_closed_total{reason="heartbeat"} 1.0' in server.services.metrics.render().decode()
            assert not answering.done()  # the answering socket is still open
            assert server.services.realtime.sockets() == 1
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await answering


async def test_ready_comes_first_even_while_broadcasts_flow(tmp_path: Path) -> None:
    """A socket joins the hub before it is accepted (its limits are checked there), so broadcasts can reach
    its outbox before ``ready``: they must still be written after it (found by bench/soak.py, where a job
    event came first)."""
    async with serve(tmp_path) as (server, client):
        org_id = (await client.get("/api/v1/admin/org")).json()["id"]
        flowing = True

        async def broadcast() -> None:
            n = 0
            while flowing:
                n += 1
                await server.services.events.publish(Event(org_id, "test.flow", {"n": n}, Audience.org()))
                await asyncio.sleep(0)

        publisher = asyncio.create_task(broadcast())
        try:
            for _ in range(15):
                async with socket(server, additional_headers=AUTH) as ws:
                    await ready(ws)
        finally:
            flowing = False
            await publisher
