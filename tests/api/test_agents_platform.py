"""The agents API against the official ``langgraph-sdk`` Python client, over real HTTP (uvicorn on
loopback), with only the URL and an Atrium key given to ``get_client``: threads, streamed, waited and
background runs, joins, interrupts resumed with a ``Command`` (also across a restart on the same data dir),
state and history, a run from an earlier checkpoint, cancellation, and who may see which thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from blockbuster import BlockBuster
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, PermissionDeniedError, UnprocessableEntityError

from atrium.app import create_app
from atrium.gateway.providers.fake import NO_ANSWER, FakeChatModel
from atrium.settings import Settings
from atrium.store.models import AgentRun, AgentThread
from tests.api.authz_helpers import BACKENDS, backend_settings
from tests.conftest import ADMIN_KEY, LiveServer, free_port
from tests.tenancy_helpers import create_tenant


def _client(server: LiveServer, key: str = ADMIN_KEY) -> LangGraphClient:
    return get_client(url=server.url, api_key=key)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.01))
    async with LiveServer(app, free_port()) as live:
        yield live


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[LangGraphClient]:
    async with _client(server) as sdk:
        yield sdk


def _messages(values: dict[str, Any]) -> list[dict[str, Any]]:
    return list(values.get("messages", []))


async def test_stream_a_run_then_wait_and_read_state(client: LangGraphClient) -> None:
    assistants = await client.assistants.search()
    assert {a["graph_id"] for a in assistants} >= {"echo", "interviewer"}
    assert (await client.assistants.get("echo"))["assistant_id"] == next(
        a["assistant_id"] for a in assistants if a["graph_id"] == "echo")
    thread = await client.threads.create(metadata={"topic": "greeting"})
    events = [part async for part in client.runs.stream(
        thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": "Hello there"}]},
        stream_mode=["values", "updates", "custom", "messages"])]
    names = [part.event for part in events]
    assert names[0] == "metadata" and names[-1] == "end", names
    assert {"values", "updates", "custom", "messages/partial", "messages/complete"} <= set(names), names
    tokens = [part.data["text"] for part in events if part.event == "custom"]
    assert "".join(tokens) == NO_ANSWER
    last_values = [part.data for part in events if part.event == "values"][-1]
    assert [m["type"] for m in _messages(last_values)] == ["human", "ai"]
    assert _messages(last_values)[1]["content"] == NO_ANSWER
    partial = [part.data for part in events if part.event == "messages/partial"][-1]
    assert partial[0]["content"] == NO_ANSWER

    waited = await client.runs.wait(thread["thread_id"], "echo", input={"messages": [{"role": "user",
                                                                                       "content": "Again"}]})
    assert [m["content"] for m in _messages(waited)] == ["Hello there", NO_ANSWER, "Again", NO_ANSWER]
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"] == waited and state["next"] == [] and state["checkpoint"]["checkpoint_id"]
    history = await client.threads.get_history(thread["thread_id"], limit=50)
    assert len(history) >= 4 and history[0]["checkpoint"] == state["checkpoint"]
    found = await client.threads.get(thread["thread_id"])
    assert found["status"] == "idle" and found["metadata"]["topic"] == "greeting"
    assert found["metadata"]["graph_id"] == "echo" and found["values"] == waited
    runs = await client.runs.list(thread["thread_id"])
    assert [run["status"] for run in runs] == ["success", "success"]


async def test_background_run_join_and_join_stream(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": "Hi"}]},
                                   stream_mode=["values", "custom"])
    assert run["status"] in ("pending", "running")
    joined = [part async for part in client.runs.join_stream(thread["thread_id"], run["run_id"])]
    assert joined[-1].event == "end" and "custom" in {part.event for part in joined}
    values = await client.runs.join(thread["thread_id"], run["run_id"])
    assert _messages(values)[-1]["content"] == NO_ANSWER
    assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"
    # Resumed after its third event (Last-Event-ID): the rest only.
    rest = [part async for part in client.runs.join_stream(thread["thread_id"], run["run_id"], last_event_id="2")]
    assert [part.id for part in rest] == [part.id for part in joined if int(part.id or 0) > 2]


async def test_interrupt_then_resume_with_a_command(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    first = await client.runs.wait(thread["thread_id"], "interviewer",
                                   input={"messages": [{"role": "user", "content": "Hello"}]})
    assert first["__interrupt__"][0]["value"] == {"question": "What is your name?"}
    interrupted = await client.threads.get(thread["thread_id"])
    assert interrupted["status"] == "interrupted" and interrupted["interrupts"]
    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["ask_name"] and state["interrupts"][0]["value"]["question"]
    assert (await client.runs.list(thread["thread_id"]))[0]["status"] == "interrupted"
    events = [part async for part in client.runs.stream(thread["thread_id"], "interviewer",
                                                        command={"resume": "Ada"}, stream_mode="values")]
    final = [part.data for part in events if part.event == "values"][-1]
    assert final["name"] == "Ada" and _messages(final)[-1]["content"] == f"Ada: {NO_ANSWER}"
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_run_from_an_earlier_checkpoint(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "echo", input={"messages": [{"role": "user", "content": "First"}]})
    after_first = (await client.threads.get_state(tid))["checkpoint"]["checkpoint_id"]
    await client.runs.wait(tid, "echo", input={"messages": [{"role": "user", "content": "Second"}]})
    earlier = await client.threads.get_state(tid, checkpoint_id=after_first)
    assert [m["content"] for m in _messages(earlier["values"])] == ["First", NO_ANSWER]
    forked = await client.runs.wait(tid, "echo", input={"messages": [{"role": "user", "content": "Instead"}]},
                                    checkpoint_id=after_first)
    assert [m["content"] for m in _messages(forked)] == ["First", NO_ANSWER, "Instead", NO_ANSWER]
    assert (await client.threads.get_state(tid))["values"] == forked


async def test_cancel_a_running_run(settings: Settings) -> None:
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.3))
    async with LiveServer(app, free_port()) as server, _client(server) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        run = await client.runs.create(tid, "echo", input={"messages": [{"role": "user", "content": "Slow"}]})
        with pytest.raises(ConflictError):  # multitask_strategy "reject" by default
            await client.runs.create(tid, "echo", input={"messages": [{"role": "user", "content": "Too"}]})
        for _ in range(100):
            if (await client.runs.get(tid, run["run_id"]))["status"] == "running":
                break
            await asyncio.sleep(0.05)
        await client.runs.cancel(tid, run["run_id"], wait=True)
        assert (await client.runs.get(tid, run["run_id"]))["status"] == "cancelled"
        assert (await client.threads.get(tid))["status"] == "idle"
        again = await client.runs.create(tid, "echo", input={"messages": [{"role": "user", "content": "Next"}]},
                                         multitask_strategy="reject")
        await client.runs.cancel(tid, again["run_id"], wait=True)
        # Deleting a thread mid-run stops the run before its checkpoints are erased.
        await client.runs.create(tid, "echo", input={"messages": [{"role": "user", "content": "Last"}]})
        await asyncio.sleep(0.5)
        await client.threads.delete(tid)
        await asyncio.sleep(0.5)
        async with server.services.agents.checkpoints.for_tenant("any") as saver:
            assert await saver.aget_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}}) is None


async def test_cancelling_a_run_no_process_runs_marks_it_cancelled(server: LiveServer,
                                                                   client: LangGraphClient) -> None:
    """A run left ``running`` by a process that died (another replica's, in the scale profile): the cancel
    is announced, nobody answers, the row says ``cancelled``."""
    thread = await client.threads.create()
    async with server.services.db.system_session() as session:
        row = await session.get(AgentThread, thread["thread_id"])
        assert row is not None
        row.status = "busy"
        orphan = AgentRun(org_id=row.org_id, thread_id=thread["thread_id"], assistant_id="echo", status="running")
        session.add(orphan)
    server.services.agents.runs.orphan_after_s = 0.2
    with pytest.raises(ConflictError):
        await client.runs.create(thread["thread_id"], "echo", input={})
    await client.runs.cancel(thread["thread_id"], orphan.id)
    assert (await client.runs.get(thread["thread_id"], orphan.id))["status"] == "cancelled"
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"
    await client.runs.wait(thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": "Hi"}]})


async def test_bodies_and_errors_are_typed(server: LiveServer, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    chosen = await client.threads.create(thread_id="7d1c7a52-0f4e-4bd7-9f0e-5b7f2c3e9a11", graph_id="echo")
    assert chosen["thread_id"] == "7d1c7a52-0f4e-4bd7-9f0e-5b7f2c3e9a11" and chosen["metadata"]["graph_id"] == "echo"
    assert (await client.threads.create(thread_id=chosen["thread_id"], if_exists="do_nothing")) == chosen
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=chosen["thread_id"])
    with pytest.raises(NotFoundError):
        await client.runs.create(thread["thread_id"], "no-such-graph", input={})
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(thread["thread_id"], "echo", input={"messages": []}, command={"resume": 1})
    with pytest.raises(httpx.HTTPStatusError) as refused:  # ``wait`` raises httpx's error, not a typed one
        await client.runs.wait(thread["thread_id"], "no-such-graph", input={})
    assert refused.value.response.status_code == 404
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        missing = await http.get("/threads/00000000000000000000000000000000")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await http.get(f"/threads/{thread['thread_id']}")).status_code == 200
        anonymous = await http.get(f"/threads/{thread['thread_id']}", headers={"Authorization": ""})
        assert anonymous.status_code == 401


async def _member_key(server: LiveServer) -> str:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        user = await http.post("/api/v1/admin/users", json={"email": "mia@example.com", "name": "Mia"})
        assert user.status_code == 201, user.text
        key = await http.post("/api/v1/admin/keys", json={"name": "mia", "user_id": user.json()["id"]})
        assert key.status_code == 201, key.text
        return str(key.json()["key"])


async def test_threads_are_their_owners_and_other_orgs_get_404(server: LiveServer, client: LangGraphClient) -> None:
    private = await client.threads.create(metadata={"kind": "private"})
    shared = await client.threads.create(metadata={"kind": "shared"})
    await client.threads.update(shared["thread_id"], metadata={"more": 1})
    async with httpx.AsyncClient(base_url=server.url, headers={"x-api-key": ADMIN_KEY}) as http:
        made = await http.patch(f"/threads/{shared['thread_id']}", json={"visibility": "org"})
        assert made.status_code == 200 and made.json()["visibility"] == "org", made.text
    await client.runs.wait(shared["thread_id"], "echo", input={"messages": [{"role": "user", "content": "Hi"}]})
    tenant = await create_tenant(server.services.db, "Other")
    async with _client(server, await _member_key(server)) as member, _client(server, tenant.raw_key) as other:
        seen = {t["thread_id"] for t in await member.threads.search(limit=100)}
        assert shared["thread_id"] in seen and private["thread_id"] not in seen
        with pytest.raises(NotFoundError):
            await member.threads.get(private["thread_id"])
        assert (await member.threads.get_state(shared["thread_id"]))["values"]["messages"]
        with pytest.raises(PermissionDeniedError):
            await member.runs.create(shared["thread_id"], "echo", input={})
        with pytest.raises(PermissionDeniedError):
            await member.threads.delete(shared["thread_id"])
        mine = await member.threads.create()
        assert {t["thread_id"] for t in await client.threads.search(limit=100)} >= {private["thread_id"]}
        assert mine["thread_id"] not in {t["thread_id"] for t in await client.threads.search(limit=100)}
        assert await other.threads.search(limit=100) == []
        for call in (other.threads.get(shared["thread_id"]), other.threads.get_state(shared["thread_id"]),
                     other.runs.list(shared["thread_id"]), other.threads.get_history(shared["thread_id"]),
                     other.runs.create(shared["thread_id"], "echo", input={})):
            with pytest.raises(NotFoundError):
                await call
    await client.threads.delete(private["thread_id"])
    with pytest.raises(NotFoundError):
        await client.threads.get(private["thread_id"])


async def test_deleting_a_thread_erases_its_checkpoints(server: LiveServer, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tokens = [part.data async for part in client.runs.stream(
        thread["thread_id"], "echo", input={"messages": [{"role": "user", "content": "Hi"}]},
        stream_mode="messages-tuple") if part.event == "messages"]
    assert "".join(chunk["content"] for chunk, _ in tokens) == NO_ANSWER
    assert tokens[0][1]["langgraph_node"] == "answer"
    config = {"configurable": {"thread_id": thread["thread_id"], "checkpoint_ns": ""}}
    checkpoints = server.services.agents.checkpoints
    async with checkpoints.for_tenant("any") as saver:
        assert await saver.aget_tuple(config) is not None
    await client.threads.delete(thread["thread_id"])
    async with checkpoints.for_tenant("any") as saver:
        assert await saver.aget_tuple(config) is None


async def test_a_stream_left_by_its_client_runs_to_the_end(settings: Settings) -> None:
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.05))
    async with LiveServer(app, free_port()) as server, _client(server) as client:
        thread = await client.threads.create()
        run_id = None
        async for part in client.runs.stream(thread["thread_id"], "echo", stream_mode="custom",
                                             input={"messages": [{"role": "user", "content": "Hi"}]}):
            if part.event == "metadata":
                run_id = part.data["run_id"]
            if part.event == "custom":
                break  # hang up after the first token
        assert run_id is not None
        values = await client.runs.join(thread["thread_id"], run_id)
        assert _messages(values)[-1]["content"] == NO_ANSWER
        assert (await client.runs.get(thread["thread_id"], run_id))["status"] == "success"


@pytest.fixture(scope="module", params=BACKENDS)
async def any_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings on SQLite, or on PostgreSQL as a normal role under RLS (module-scoped: made before the
    blocking-call guard starts, as the PostgreSQL server's start blocks)."""
    backend: str = request.param
    return await backend_settings(request, tmp_path_factory.mktemp(f"agents-{backend}") / "data", backend)


@contextlib.asynccontextmanager
async def _started(server: LiveServer, guard: BlockBuster) -> AsyncIterator[LiveServer]:
    """``server`` running; its start-up outside the blocking-call guard (asyncpg looks for ~/.pgpass with
    a blocking ``stat`` when the migration role's URL has no password)."""
    guard.deactivate()
    try:
        await server.__aenter__()
    finally:
        guard.activate()
    try:
        yield server
    finally:
        await server.__aexit__()


async def test_interrupt_and_resume_across_a_restart(any_backend: Settings, blockbuster: BlockBuster) -> None:
    settings = any_backend
    first = LiveServer(create_app(settings, chat_model=FakeChatModel()), free_port())
    async with _started(first, blockbuster), _client(first) as client:
        thread = await client.threads.create()
        waiting = await client.runs.wait(thread["thread_id"], "interviewer",
                                         input={"messages": [{"role": "user", "content": "Hello"}]})
        assert waiting["__interrupt__"]
    second = LiveServer(create_app(settings, chat_model=FakeChatModel()), free_port())
    async with _started(second, blockbuster), _client(second) as client:
        assert (await client.threads.get(thread["thread_id"]))["status"] == "interrupted"
        done = await client.runs.wait(thread["thread_id"], "interviewer", command={"resume": "Grace"})
        assert _messages(done)[-1]["content"] == f"Grace: {NO_ANSWER}"
        assert [m["content"] for m in _messages(done)][:1] == ["Hello"]
