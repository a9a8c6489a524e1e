"""Guided flows over a real WebSocket (uvicorn on loopback, the ``websockets`` client): ``flow.start``,
``flow.answer`` (a refused answer re-prompts), ``flow.done``, ``flow.cancel``, errors, and another
user's flow answered as not found."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings


async def _send(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    while True:  # broadcast events (presence, typing...: ``"id": null``) may come between
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if event["id"] is not None:
            assert event["id"] == message.get("id"), event
            return event


async def _member_key(server: LiveServer) -> str:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        user = await http.post("/api/v1/admin/users", json={"email": "wes@example.com", "name": "Wes"})
        key = await http.post("/api/v1/admin/keys", json={"name": "wes", "user_id": user.json()["id"]})
        return str(key.json()["key"])


async def test_a_project_flow_over_the_socket(tmp_path: Path) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data")
    async with LiveServer(create_app(settings, chat_model=FakeChatModel()), free_port()) as server:
        member = await _member_key(server)
        async with connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                           open_timeout=10) as ws, \
                connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {member}"},
                        open_timeout=10) as other:
            assert json.loads(await ws.recv())["type"] == "ready"
            assert json.loads(await other.recv())["type"] == "ready"
            prompt = await _send(ws, {"type": "flow.start", "id": "s1", "flow": "project"})
            assert prompt["type"] == "flow.prompt" and prompt["prompt"]["step"] == "title"
            flow_id = prompt["flow_id"]
            refused = await _send(ws, {"type": "flow.answer", "id": "a1", "flow_id": flow_id, "answer": "t" * 101})
            assert refused["type"] == "flow.prompt" and refused["prompt"]["step"] == "title"
            assert "at most 100" in refused["prompt"]["error"]
            stolen = await _send(other, {"type": "flow.answer", "id": "x1", "flow_id": flow_id, "answer": "Mine"})
            assert stolen["type"] == "error" and stolen["error"]["code"] == "not_found"
            for at, answer in enumerate(["Ibis", "A research study of wetlands.", "research", "public"]):
                event = await _send(ws, {"type": "flow.answer", "id": f"b{at}", "flow_id": flow_id, "answer": answer})
                assert event["type"] == "flow.prompt", event
            assert event["prompt"]["kind"] == "confirm"
            done = await _send(ws, {"type": "flow.answer", "id": "c1", "flow_id": flow_id, "answer": "yes"})
            assert done["type"] == "flow.done" and done["status"] == "done" and done["result"]["title"] == "Ibis"
            again = await _send(ws, {"type": "flow.answer", "id": "c2", "flow_id": flow_id, "answer": "yes"})
            assert again["type"] == "error" and again["error"]["code"] == "conflict"
            second = await _send(ws, {"type": "flow.start", "id": "s2", "flow": "project"})
            cancelled = await _send(ws, {"type": "flow.cancel", "id": "k1", "flow_id": second["flow_id"]})
            assert cancelled == {"type": "flow.cancelled", "id": "k1", "flow_id": second["flow_id"], "flow": "project"}
            unknown = await _send(ws, {"type": "flow.start", "id": "s3", "flow": "nothing"})
            assert unknown["type"] == "error" and unknown["error"]["code"] == "not_found"
            malformed = await _send(ws, {"type": "flow.answer", "id": "m1", "answer": "secret-ish", "extra": 1})
            assert malformed["type"] == "error" and malformed["error"]["code"] == "invalid_request"
            assert "secret-ish" not in json.dumps(malformed)
            denied = await _send(other, {"type": "flow.start", "id": "o1", "flow": "onboarding"})
            assert denied["type"] == "error" and denied["error"]["code"] == "forbidden"
            assert (await _send(ws, {"type": "ping", "id": "p"}))["type"] == "pong"  # the socket lives on


async def test_a_waiting_flow_reaches_its_starters_sockets_only(tmp_path: Path) -> None:
    """A flow started over REST waits for an answer: its starter's open socket hears ``flow.prompt``
    (a broadcast, ``"id": null``); another member's socket does not."""
    settings = await asyncio.to_thread(make_settings, tmp_path / "data")
    async with LiveServer(create_app(settings, chat_model=FakeChatModel()), free_port()) as server:
        member = await _member_key(server)
        async with connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                           open_timeout=10) as ws, \
                connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {member}"},
                        open_timeout=10) as other, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            assert json.loads(await ws.recv())["type"] == "ready"
            assert json.loads(await other.recv())["type"] == "ready"
            started = await http.post("/api/v1/flows/project")
            assert started.status_code == 201, started.text
            while (event := json.loads(await asyncio.wait_for(ws.recv(), 15)))["type"] != "flow.prompt":
                assert event["id"] is None, event
            assert event["flow_id"] == started.json()["id"] and event["prompt"]["step"] == "title", event
            assert event["id"] is None and event["flow"] == "project"
            await other.send(json.dumps({"type": "ping", "id": "p"}))  # what was sent to it before is here now
            while (heard := json.loads(await asyncio.wait_for(other.recv(), 15)))["type"] != "pong":
                assert heard["type"] != "flow.prompt", heard


async def test_a_slow_flow_step_does_not_hold_up_the_socket(tmp_path: Path) -> None:
    """The type step's suggestions come from a slow model: while that answer is being made, a ping sent
    after it is answered first, and the flow's prompt still arrives."""
    settings = await asyncio.to_thread(make_settings, tmp_path / "data")
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.1))
    async with LiveServer(app, free_port()) as server, \
            connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                    open_timeout=10) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        flow_id = (await _send(ws, {"type": "flow.start", "id": "s", "flow": "project"}))["flow_id"]
        await _send(ws, {"type": "flow.answer", "id": "t", "flow_id": flow_id, "answer": "Ibis"})
        await ws.send(json.dumps({"type": "flow.answer", "id": "d", "flow_id": flow_id,
                                  "answer": "A research study of wetlands."}))
        await ws.send(json.dumps({"type": "ping", "id": "p"}))
        order = []
        while len(order) < 2:
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if event["id"] is not None:
                order.append((event["id"], event["type"]))
        assert order == [("p", "pong"), ("d", "flow.prompt")], order
