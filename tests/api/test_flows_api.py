"""Guided flows over REST with the fake model: the project and onboarding flows end to end, the password
never in the checkpoints, cancel, who may touch a flow, a restart mid-flow, and ``project`` through the
LangGraph platform API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from blockbuster import BlockBuster
from sqlalchemy import update

from atrium.agents.flows.service import FlowWaiting
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from atrium.store.models import AgentThread
from tests.api.authz_helpers import BACKENDS, backend_settings
from tests.conftest import ADMIN_KEY, RunningApp, run_app, start_app

PASSWORD = "correct-horse-battery-staple-42"


async def _key(client: httpx.AsyncClient, email: str, role: str = "member") -> str:
    user = await client.post("/api/v1/admin/users", json={"email": email, "name": email.split("@")[0], "role": role})
    assert user.status_code == 201, user.text
    key = await client.post("/api/v1/admin/keys", json={"name": email, "user_id": user.json()["id"], "role": role})
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


def _as(app: RunningApp, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://atrium.test",
                             headers={"Authorization": f"Bearer {key}"})


async def _answer(client: httpx.AsyncClient, flow_id: str, answer: Any, status: int = 200) -> dict[str, Any]:
    response = await client.post(f"/api/v1/flows/{flow_id}/answer", json={"answer": answer})
    assert response.status_code == status, response.text
    return response.json()


async def _project(client: httpx.AsyncClient, title: str, visibility: str) -> dict[str, Any]:
    started = await client.post("/api/v1/flows/project")
    assert started.status_code == 201, started.text
    flow_id = started.json()["id"]
    await _answer(client, flow_id, title)
    await _answer(client, flow_id, "A mobile app and its API for our customers.")
    await _answer(client, flow_id, "software")
    await _answer(client, flow_id, visibility)
    return await _answer(client, flow_id, "yes")


async def test_the_project_flow_creates_a_record_its_org_or_owner_reads(running: RunningApp) -> None:
    listed = (await running.client.get("/api/v1/flows")).json()["flows"]
    assert {flow["name"] for flow in listed} == {"onboarding", "project"}
    async with _as(running, await _key(running.client, "ann@example.com")) as ann, \
            _as(running, await _key(running.client, "bo@example.com")) as bo:
        started = await ann.post("/api/v1/flows/project")
        assert started.status_code == 201, started.text
        flow = started.json()
        assert flow["status"] == "waiting" and flow["prompt"]["step"] == "title" and flow["prompt"]["error"] is None
        refused = await _answer(ann, flow["id"], "x" * 101)
        assert refused["prompt"]["step"] == "title" and "at most 100" in refused["prompt"]["error"]
        described = await _answer(ann, flow["id"], "Falcon")
        assert described["prompt"]["step"] == "description" and described["values"] == {"title": "Falcon"}
        kind = await _answer(ann, flow["id"], "A mobile app and its API, with a launch campaign.")
        # The fake model answers no usable type: the keyword rule proposes them, "other" last.
        assert kind["prompt"]["kind"] == "choice" and kind["prompt"]["suggestions"] == ["software", "marketing",
                                                                                         "other"]
        assert (await _answer(ann, flow["id"], "rockets"))["prompt"]["error"].startswith("Choose one of")
        await _answer(ann, flow["id"], "software")
        confirm = await _answer(ann, flow["id"], "private")
        assert confirm["prompt"]["kind"] == "confirm" and "Falcon" in confirm["prompt"]["summary"]
        done = await _answer(ann, flow["id"], True)
        assert done["status"] == "done" and done["prompt"] is None
        project_id = done["result"]["project_id"]
        assert done["result"] == {"project_id": project_id, "title": "Falcon", "kind": "software",
                                  "visibility": "private"}
        assert (await _answer(ann, flow["id"], "again", status=409))["error"]["code"] == "conflict"
        assert (await ann.get(f"/api/v1/flows/{flow['id']}")).json()["status"] == "done"
        mine = await ann.get(f"/api/v1/projects/{project_id}")
        assert mine.status_code == 200 and mine.json()["owned"] is True and mine.json()["kind"] == "software"
        for other in (bo, running.client):  # another member, and the owner of the organisation: private
            assert (await other.get(f"/api/v1/projects/{project_id}")).status_code == 404
            assert project_id not in {p["id"] for p in (await other.get("/api/v1/projects")).json()["projects"]}
        public = (await _project(ann, "Heron", "public"))["result"]
        assert public["visibility"] == "org"
        seen = await bo.get(f"/api/v1/projects/{public['project_id']}")
        assert seen.status_code == 200 and seen.json()["owned"] is False


async def test_suggestions_come_from_the_model_when_it_answers_usefully(settings: Settings) -> None:
    model = FakeChatModel(answer=lambda request: 'Here: {"suggestions": ["Research", "nonsense", "event"]}')
    async with run_app(settings, model) as app:
        waiting: list[FlowWaiting] = []

        async def record(event: FlowWaiting) -> None:  # where notifications connect
            waiting.append(event)

        app.services.agents.flows.on_waiting = record
        flow = (await app.client.post("/api/v1/flows/project")).json()
        await _answer(app.client, flow["id"], "Survey")
        kind = await _answer(app.client, flow["id"], "We ask people things.")
        assert kind["prompt"]["suggestions"] == ["research", "event", "other"]
        assert "Choose among" in model.requests[-1].messages[-1].text
        assert [(event.flow_id, event.flow, event.prompt["step"]) for event in waiting] == [
            (flow["id"], "project", "title"), (flow["id"], "project", "description"), (flow["id"], "project", "kind")]
        assert waiting[0].org_id and waiting[0].user_id is not None


async def _raw_bytes(data_dir: Path) -> bytes:
    """Every database file of the data dir, as bytes (LangGraph's checkpoints.db and its WAL included)."""
    return await anyio.to_thread.run_sync(_read_all, data_dir)


def _read_all(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(data_dir.rglob("*")) if path.is_file()
                    and (path.suffix in (".db", ".sqlite") or path.name.endswith(("-wal", "-shm", "-journal"))))


async def test_onboarding_creates_an_account_and_never_keeps_the_password(running: RunningApp,
                                                                          settings: Settings) -> None:
    admin = running.client
    member_key = await _key(admin, "mo@example.com")
    async with _as(running, member_key) as member:
        assert (await member.post("/api/v1/flows/onboarding")).status_code == 403
    flow = (await admin.post("/api/v1/flows/onboarding")).json()
    assert flow["prompt"]["step"] == "email"
    assert (await _answer(admin, flow["id"], "nope"))["prompt"]["error"] == "This is not a valid email address."
    taken = await _answer(admin, flow["id"], "MO@example.com")
    assert taken["prompt"]["error"] == "This email is already registered."
    interests = await _answer(admin, flow["id"], "ada.lovelace@example.com")
    assert interests["prompt"]["kind"] == "multi_choice"
    username = await _answer(admin, flow["id"], ["ai", "data"])
    assert username["prompt"]["suggestions"] == ["ada.lovelace", "adalovelace", "ada_lovelace"]
    assert "username" in (await _answer(admin, flow["id"], "Not Valid!"))["prompt"]["error"]
    password = await _answer(admin, flow["id"], "ada.lovelace")
    assert password["prompt"]["kind"] == "password"
    short = await _answer(admin, flow["id"], "short")
    assert short["prompt"]["step"] == "password" and "8 to" in short["prompt"]["error"]
    confirm = await _answer(admin, flow["id"], PASSWORD)
    assert confirm["prompt"]["kind"] == "confirm" and "password" not in confirm["values"]
    assert "ada.lovelace@example.com" in confirm["prompt"]["summary"]
    # Mid-flow: the state holds the hash (so the raw files are the right ones to read), never the password.
    raw = await _raw_bytes(settings.data_dir)
    assert b"$argon2id$" in raw and PASSWORD.encode() not in raw and b"short" not in raw.replace(b"shortcut", b"")
    done = await _answer(admin, flow["id"], "yes")
    assert done["status"] == "done", done
    assert done["result"]["username"] == "ada.lovelace" and done["result"]["interests"] == ["ai", "data"]
    assert PASSWORD.encode() not in await _raw_bytes(settings.data_dir)
    async with running.services.agents.checkpoints.for_tenant("any") as saver:  # erased once ended
        assert await saver.aget_tuple({"configurable": {"thread_id": flow["id"], "checkpoint_ns": ""}}) is None
    login = await admin.post("/api/v1/auth/token", json={"email": "ada.lovelace@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    # A second one: the username is taken now, so it is neither suggested nor accepted.
    again = (await admin.post("/api/v1/flows/onboarding")).json()
    await _answer(admin, again["id"], "ada.lovelace@example.net")
    username = await _answer(admin, again["id"], ["ai"])
    assert "ada.lovelace" not in username["prompt"]["suggestions"] and len(username["prompt"]["suggestions"]) == 3
    assert "taken" in (await _answer(admin, again["id"], "ada.lovelace"))["prompt"]["error"]
    async with _as(running, login.json()["access_token"]) as ada:  # the new member makes a project, then leaves
        made = (await _project(ada, "Ada's notes", "public"))["result"]
        assert (await admin.get(f"/api/v1/projects/{made['project_id']}")).status_code == 200
        erased = await ada.delete("/api/v1/me")
        assert erased.status_code == 200 and erased.json()["erased"]["projects"] == 1, erased.text
    assert (await admin.get(f"/api/v1/projects/{made['project_id']}")).status_code == 404


async def test_cancel_and_only_the_starter_sees_a_flow(running: RunningApp) -> None:
    async with _as(running, await _key(running.client, "cy@example.com")) as cy, \
            _as(running, await _key(running.client, "di@example.com")) as di:
        flow = (await cy.post("/api/v1/flows/project")).json()
        await _answer(cy, flow["id"], "Owl")
        for other in (di, running.client):  # same organisation, and its owner
            assert (await other.get(f"/api/v1/flows/{flow['id']}")).status_code == 404
            assert (await other.post(f"/api/v1/flows/{flow['id']}/answer", json={"answer": "x"})).status_code == 404
            assert (await other.post(f"/api/v1/flows/{flow['id']}/cancel")).status_code == 404
        assert (await cy.get(f"/api/v1/flows/{flow['id']}")).json()["prompt"]["step"] == "description"
        # One answer at a time: a flow claimed by another answer is a 409 (a claim older than 5 minutes,
        # left by a process that died, is taken over).
        async with running.services.db.system_session() as session:
            await session.execute(update(AgentThread).where(AgentThread.id == flow["id"]).values(status="busy"))
        assert (await _answer(cy, flow["id"], "Owls", status=409))["error"]["code"] == "conflict"
        async with running.services.db.system_session() as session:
            await session.execute(update(AgentThread).where(AgentThread.id == flow["id"]).values(
                updated_at=datetime.now(UTC) - timedelta(minutes=6)))
        assert (await _answer(cy, flow["id"], "About owls."))["prompt"]["step"] == "kind"
        cancelled = await cy.post(f"/api/v1/flows/{flow['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await cy.post(f"/api/v1/flows/{flow['id']}/cancel")).json()["status"] == "cancelled"
        assert (await cy.get(f"/api/v1/flows/{flow['id']}")).json()["status"] == "cancelled"
        await _answer(cy, flow["id"], "more", status=409)
        async with running.services.agents.checkpoints.for_tenant("any") as saver:
            assert await saver.aget_tuple({"configurable": {"thread_id": flow["id"], "checkpoint_ns": ""}}) is None
        assert (await cy.post("/api/v1/flows/nothing")).status_code == 404
        assert (await cy.get("/api/v1/flows/not-a-flow")).status_code == 404
        bad = await cy.post(f"/api/v1/flows/{flow['id']}/answer", json={"answer": {"nested": "hunter22"}})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        assert "hunter22" not in bad.text  # an answer may be a password: never echoed
        assert (await cy.post(f"/api/v1/flows/{flow['id']}/answer", json={"answer": "x" * 5000})).status_code == 422


@pytest.fixture(scope="module", params=BACKENDS)
async def any_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings on SQLite, or on PostgreSQL as a normal role under RLS (module-scoped: made before the
    blocking-call guard starts, as the PostgreSQL server's start blocks)."""
    backend: str = request.param
    return await backend_settings(request, tmp_path_factory.mktemp(f"flows-{backend}") / "data", backend)


@contextlib.asynccontextmanager
async def _started(settings: Settings, guard: BlockBuster) -> AsyncIterator[RunningApp]:
    """The app, its start-up outside the blocking-call guard (asyncpg looks for ~/.pgpass with a blocking
    ``stat`` when the migration role's URL has no password)."""
    guard.deactivate()
    try:
        app, lifespan = await start_app(settings, FakeChatModel())
    finally:
        guard.activate()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            yield RunningApp(app, client)
    finally:
        await lifespan.__aexit__(None, None, None)


async def test_a_flow_goes_on_after_a_restart(any_backend: Settings, blockbuster: BlockBuster) -> None:
    """Started, the app stopped, a new app on the same data (SQLite file or PostgreSQL): it continues."""
    settings = any_backend
    async with _started(settings, blockbuster) as app:
        flow = (await app.client.post("/api/v1/flows/project")).json()
        await _answer(app.client, flow["id"], "Kestrel")
    async with _started(settings, blockbuster) as app:
        state = (await app.client.get(f"/api/v1/flows/{flow['id']}")).json()
        assert state["prompt"]["step"] == "description" and state["values"] == {"title": "Kestrel"}
        await _answer(app.client, flow["id"], "An offsite event for the team.")
        await _answer(app.client, flow["id"], "event")
        await _answer(app.client, flow["id"], "public")
        done = await _answer(app.client, flow["id"], "yes")
        assert done["status"] == "done" and done["result"]["title"] == "Kestrel"
        project = await app.client.get(f"/api/v1/projects/{done['result']['project_id']}")
        assert project.status_code == 200 and project.json()["visibility"] == "org", project.text


async def test_the_project_flow_through_the_platform_api(running: RunningApp) -> None:
    http = running.client
    found = (await http.post("/assistants/search", json={})).json()
    assert "project" in {a["graph_id"] for a in found} and "onboarding" not in {a["graph_id"] for a in found}
    thread = (await http.post("/threads", json={})).json()["thread_id"]
    answers: list[Any] = ["Lark", "Research on bird songs.", "research", "private", "yes"]
    first = await http.post(f"/threads/{thread}/runs/wait", json={"assistant_id": "project", "input": {}})
    assert first.status_code == 200 and first.json()["__interrupt__"][0]["value"]["step"] == "title", first.text
    for answer in answers:
        last = await http.post(f"/threads/{thread}/runs/wait",
                               json={"assistant_id": "project", "command": {"resume": answer}})
        assert last.status_code == 200, last.text
    values = last.json()
    assert values["outcome"] == "done" and values["result"]["title"] == "Lark"
    got = await http.get(f"/api/v1/projects/{values['result']['project_id']}")
    assert got.status_code == 200 and got.json()["kind"] == "research"


@pytest.mark.parametrize("path", ["/api/v1/flows", "/api/v1/projects"])
async def test_anonymous_callers_are_refused(running: RunningApp, path: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=running.app), base_url="http://t") as anon:
        assert (await anon.get(path)).status_code == 401
    assert ADMIN_KEY
