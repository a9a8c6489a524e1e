"""Tenant isolation attacked through every endpoint, on SQLite and on PostgreSQL (the app connected as a
normal role, under Row-Level Security, with ``database.require_rls`` on).

Tenant A (the bootstrap organisation) owns documents, a conversation, a query, a job, users, keys, a
division, a service account, a budget and a login session. Tenant B, with its own owner key, attacks:
A's ids in paths and bodies, searches for A's words, asks in A's conversation, lists everything. Every
one of B's responses is checked for A's ids and secret text (0 leaked rows), and a resource of A asked
for by id answers 404, never 403, so its existence is not revealed.

``CASES`` maps every route of the app to its attack; ``test_every_route_has_an_isolation_case`` fails
for a route with neither a case nor an explicit exemption, so a new endpoint (``GET /api/v1/sync`` when it
comes) cannot ship without one. ``WS /ws`` is attacked over a real socket (uvicorn on loopback).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from atrium.accounts.api_keys import create_key
from atrium.gateway.providers.fake import FakeChatModel
from atrium.store.models import (
    ApiKey,
    AuditEvent,
    Budget,
    Collection,
    Conversation,
    Division,
    Invitation,
    Membership,
    Message,
    OrgPolicy,
    UsageRecord,
    UsageReset,
    User,
)
from tests.api.artifact_helpers import artifact_or_grounded
from tests.api.authz_helpers import (
    BACKENDS,
    PUBLIC_ROUTES,
    app_routes,
    backend_settings,
    client_for,
    password_hash,
    ws_exchange,
)
from tests.api.helpers import upload, wait_job
from tests.conftest import ADMIN_KEY, LiveServer, RunningApp, free_port, start_app
from tests.push_servers import NOTIFICATIONS_FOR_TESTS, browser_subscription
from tests.tenancy_helpers import create_tenant

ORG_B = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"
VAULT_CODE = "QX-7731-ZANZIBAR"
A_COLLECTION = "alpha-private"
A_SHELF = "alpha-vault-shelf"  # A's private collection: B never names one like it, so it is one of A's secrets
A_GUEST = "alpha.guest@alpha.example"  # invited by A
A_LEDGER = "alpha-ledger"  # A's collection whose name B then takes for its own
A_DOC = f"# Vault\n\nThe vault code is {VAULT_CODE}. Ask the alpha desk for the vault code.\n"
B_DOC = "# Bravo handbook\n\nThe bravo vault code lives with the bravo desk, next to the vault door.\n"
PASSWORD_A, PASSWORD_B = "alpha-password-1", "bravo-password-1"
A_POLICY_DOMAIN = "alpha-secret-domain.example"
A_POLICY = {"output": {"link_domains": [A_POLICY_DOMAIN]}}
A_PUSH_ENDPOINT = "http://127.0.0.1:9/push/alpha-secret-subscription"

A_HOOK = "http://127.0.0.1:9/alpha-secret-hook"  # A's webhook (port 9: deliveries fail and are recorded)

EXEMPT = {**PUBLIC_ROUTES,  # no tenant data to attack
          ("GET", "/"): "the playground page: static, no data",
          ("GET", "/playground/{name}"): "the playground's static files, no data"}


@dataclass
class World:
    backend: str
    running: RunningApp
    model: FakeChatModel
    a: httpx.AsyncClient  # A's owner
    b: httpx.AsyncClient  # B's owner: the attacker
    b_viewer: httpx.AsyncClient
    ids: dict[str, str]  # A's resources
    b_docs: set[str]
    b_user_email: str
    secrets: set[str]  # what must never appear in a response to B
    a_refresh: list[str] = field(default_factory=list)  # A's current refresh token (it rotates)
    b_uploaded: set[str] = field(default_factory=set)  # documents B uploaded during the cases

    @property
    def db(self) -> Any:
        return self.running.services.db

    async def attack(self, method: str, path: str, *, allow: Iterable[str] = (),
                     client: httpx.AsyncClient | None = None, **kwargs: Any) -> httpx.Response:
        """B's request, checked for any of A's secrets (except ``allow``) in the answer."""
        response = await (client or self.b).request(method, path, **kwargs)
        leaked = sorted(secret for secret in self.secrets - set(allow) if secret in response.text)
        assert not leaked, f"{method} {path} ({self.backend}) leaked {leaked}: {response.text[:500]}"
        return response


def not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] in ("not_found", "model_not_found")


def b_own_or_not_found(response: httpx.Response, found: Callable[[Any], set[str]], world: World) -> None:
    """B naming A's collection: ``404`` when B has no collection of that name, else only what B itself put
    in its own collection of that name (``found`` picks the document ids out of the answer)."""
    if response.status_code == 404:
        not_found(response)
        return
    assert response.status_code == 200, response.text
    assert found(response.json()) <= world.b_uploaded


def refused(response: httpx.Response) -> None:
    """Refused without creating anything (the exact code is the owning module's choice)."""
    assert response.status_code in (403, 404, 422), response.text
    assert "error" in response.json()


async def _seed_accounts(db: Any, org_a: str) -> dict[str, str]:
    """A's division, member (with a password), service account, extra key, budget and audit row."""
    async with db.system_session() as session:
        division = Division(org_id=org_a, name="Alpha Secret Division")
        member = User(org_id=org_a, email="alpha.member@alpha.example", name="Alpha Member", role="member",
                      password_hash=await password_hash(PASSWORD_A))
        joiner = User(org_id=org_a, email="alpha.joiner@alpha.example", name="Alpha Joiner", role="member")
        service = User(org_id=org_a, email="svc-alpha@service.invalid", name="Alpha Robot", role="member",
                       is_service=True)
        session.add_all([division, member, joiner, service])
        await session.flush()
        session.add_all([Membership(org_id=org_a, user_id=user.id, role="member", division_id=division.id)
                         for user in (member, joiner, service)])
        key, raw = await create_key(session, org_id=org_a, user_id=member.id, role="member", name="alpha member key")
        budget = Budget(org_id=org_a, scope="org", subject_id=org_a, period="month", limit_micro_usd=100_000_000)
        session.add(budget)
        await session.flush()
        session.add(AuditEvent(org_id=org_a, action="test.alpha_secret", target_type="division",
                               target_id=division.id))
        session.add(OrgPolicy(org_id=org_a, policy=A_POLICY))
        admin_key = await session.scalar(select(ApiKey.id).where(ApiKey.org_id == org_a, ApiKey.name != key.name))
        return {"division": division.id, "member": member.id, "member_email": member.email, "joiner": joiner.id,
                "joiner_email": joiner.email, "service": service.id, "key": key.id, "key_prefix": key.prefix,
                "member_key": raw, "budget": budget.id, "admin_key": str(admin_key)}


async def _seed_b(db: Any) -> tuple[str, str, str]:
    tenant = await create_tenant(db, "Bravo", org_id=ORG_B)
    async with db.system_session() as session:
        user = await session.get(User, tenant.user_id)
        assert user is not None
        user.password_hash = await password_hash(PASSWORD_B)
        email = user.email
        _, viewer = await create_key(session, org_id=ORG_B, user_id=tenant.user_id, role="viewer", name="viewer")
    return tenant.raw_key, viewer, email


@pytest.fixture(scope="module", params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    backend: str = request.param
    overrides: dict[str, Any] = {"gateway": {
        "providers": {"vault": {"kind": "fake", "fake_answer": "An answer of the restricted model."}},
        "models": {"restricted": {"provider": "vault", "model": "fake"}},
        "tenants": {ORG_B: {"allowed_models": ["fake", "hash-bow"]}},
    }, "notifications": NOTIFICATIONS_FOR_TESTS, "webhooks": {"allow_http": True, "allow_private": True}}
    settings = await backend_settings(request, tmp_path_factory.mktemp(f"isolation-{backend}"), backend, **overrides)
    model = FakeChatModel(answer=artifact_or_grounded)
    app, lifespan = await start_app(settings, model)
    a = client_for(app, ADMIN_KEY)
    running = RunningApp(app, a, model)
    try:
        db = running.services.db
        org_a = (await a.get("/api/v1/admin/org")).json()["id"]
        ids = await _seed_accounts(db, org_a)
        job = await wait_job(a, (await upload(a, {"vault.md": A_DOC}, A_COLLECTION))["job_id"])
        assert job["status"] == "succeeded", job
        ask = (await a.post("/api/v1/chat/ask", json={"message": "What is the vault code?",
                                                      "collection": A_COLLECTION})).json()
        assert VAULT_CODE in ask["answer"], ask
        query = (await a.post("/api/v1/query", json={"question": "Where is the vault code?"})).json()
        invitation = await a.post("/api/v1/admin/invitations", json={"email": A_GUEST})
        assert invitation.status_code == 202, invitation.text
        for name, visibility in ((A_SHELF, "private"), (A_LEDGER, "org")):
            made = await a.post("/api/v1/collections", json={"name": name, "visibility": visibility})
            assert made.status_code == 201, made.text
        artifact = await a.post("/api/v1/artifacts", json={
            "kind": "markdown", "title": "Alpha vault artifact", "visibility": "org",
            "content": {"text": f"The vault code is {VAULT_CODE}."}, "conversation_id": ask["conversation_id"]})
        assert artifact.status_code == 201, artifact.text
        login = (await a.post("/api/v1/auth/token", json={"email": ids["member_email"], "password": PASSWORD_A}))
        assert login.status_code == 200, login.text
        ids |= {"org": org_a, "job": job["id"], "document": job["result"]["documents"][0]["document_id"],
                "conversation": ask["conversation_id"], "message": ask["message_id"],
                "user_message": ask["user_message_id"], "query": query["id"], "shelf": A_SHELF,
                "invitation": invitation.json()["id"], "guest": A_GUEST, "artifact": artifact.json()["id"]}
        ids |= await _seed_agents(a)
        ids |= await _seed_flows(a)
        device = await a.post("/api/v1/notifications/devices", json=browser_subscription(A_PUSH_ENDPOINT))
        assert device.status_code == 201, device.text
        ids |= {"device": device.json()["id"], "device_endpoint": A_PUSH_ENDPOINT}
        hook = await a.post("/api/v1/webhooks", json={"url": A_HOOK})
        assert hook.status_code == 201, hook.text
        ids |= {"webhook": hook.json()["id"], "webhook_url": A_HOOK, "webhook_secret": hook.json()["secret"]}
        b_key, b_viewer_key, b_email = await _seed_b(db)
        b = client_for(app, b_key)
        b_job = await wait_job(b, (await upload(b, {"bravo.md": B_DOC}, "docs"))["job_id"])
        assert b_job["status"] == "succeeded", b_job
        secrets = {value for name, value in ids.items() if name not in ("joiner", "joiner_email")}
        secrets |= {VAULT_CODE, "Alpha Secret Division", "Alpha Robot", A_POLICY_DOMAIN, ADMIN_KEY[:12],
                    login.json()["refresh_token"]}
        yield World(backend=backend, running=running, model=model, a=a, b=b,
                    b_viewer=client_for(app, b_viewer_key), ids=ids,
                    b_docs={d["document_id"] for d in b_job["result"]["documents"]}, b_user_email=b_email,
                    secrets=secrets, a_refresh=[login.json()["refresh_token"]])
    finally:
        await a.aclose()
        await lifespan.__aexit__(None, None, None)


# --- The route table ---------------------------------------------------------------------------------------

Case = Callable[[World], Awaitable[None]]
CASES: dict[tuple[str, str], Case] = {}


def attack(*routes: tuple[str, str]) -> Callable[[Case], Case]:
    def register(case: Case) -> Case:
        for route in routes:
            assert route not in CASES, route
            CASES[route] = case
        return case

    return register


def test_every_route_has_an_isolation_case(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    missing = sorted(routes - set(CASES) - set(EXEMPT))
    assert not missing, f"routes without a tenant-isolation case in tests/api/test_isolation.py: {missing}"
    stale = sorted((set(CASES) | set(EXEMPT)) - routes)
    assert not stale, f"isolation cases for routes that no longer exist: {stale}"


# --- Webhooks and analytics ------------------------------------------------------------------------------

@attack(("GET", "/api/v1/webhooks"), ("POST", "/api/v1/webhooks"), ("DELETE", "/api/v1/webhooks/{webhook_id}"))
async def _webhooks(world: World) -> None:
    listed = await world.attack("GET", "/api/v1/webhooks")
    assert listed.status_code == 200 and world.ids["webhook"] not in listed.text, listed.text
    not_found(await world.attack("DELETE", f"/api/v1/webhooks/{world.ids['webhook']}"))
    made = await world.attack("POST", "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/bravo-hook"})
    assert made.status_code == 201, made.text
    mine = (await world.a.get("/api/v1/webhooks")).json()["webhooks"]
    assert [hook["id"] for hook in mine] == [world.ids["webhook"]]  # A's own, untouched; B's not among them
    assert (await world.b.delete(f"/api/v1/webhooks/{made.json()['id']}")).status_code == 204


async def _usage_count(world: World, org: str) -> int:
    async with world.db.system_session() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageRecord)
                                        .where(UsageRecord.org_id == org)) or 0)


@attack(("GET", "/api/v1/analytics/user"), ("GET", "/api/v1/analytics/system"))
async def _analytics(world: World) -> None:
    for _ in range(100):  # the usage recorder writes in batches, in the background
        if await _usage_count(world, world.ids["org"]) > 0:
            break
        await asyncio.sleep(0.1)
    assert await _usage_count(world, world.ids["org"]) > 0  # A has usage B must not see
    b_calls = await _usage_count(world, ORG_B)
    for path in ("/api/v1/analytics/user", "/api/v1/analytics/system"):
        report = await world.attack("GET", path)
        assert report.status_code == 200, report.text
        assert report.json()["totals"]["requests"] <= b_calls, report.text
        csv = await world.attack("GET", path, params={"format": "csv"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv"), csv.text
    system = (await world.b.get("/api/v1/analytics/system")).json()
    assert system["totals"]["requests"] == b_calls and system.get("orgs", 1) <= 1, system


@attack(("POST", "/api/v1/analytics/user/{user_id}/reset"))
async def _analytics_reset(world: World) -> None:
    for user in (world.ids["member"], world.ids["service"]):
        not_found(await world.attack("POST", f"/api/v1/analytics/user/{user}/reset"))
    async with world.db.system_session() as session:
        resets = await session.scalar(select(func.count()).select_from(UsageReset)
                                      .where(UsageReset.org_id == world.ids["org"]))
    assert resets == 0


# --- Conversations and chat --------------------------------------------------------------------------------

async def _a_message_count(world: World) -> int:
    async with world.db.system_session() as session:
        return int(await session.scalar(select(func.count()).select_from(Message).where(
            Message.conversation_id == world.ids["conversation"])) or 0)


@attack(("GET", "/api/v1/conversations/{conversation_id}"),
        ("GET", "/api/v1/conversations/{conversation_id}/messages"),
        ("DELETE", "/api/v1/conversations/{conversation_id}"))
async def _conversation_by_id(world: World) -> None:
    conversation = world.ids["conversation"]
    for method, path in (("GET", f"/api/v1/conversations/{conversation}"),
                         ("GET", f"/api/v1/conversations/{conversation}/messages"),
                         ("DELETE", f"/api/v1/conversations/{conversation}")):
        not_found(await world.attack(method, path))
    messages = (await world.a.get(f"/api/v1/conversations/{conversation}/messages")).json()["messages"]
    assert len(messages) == 2 and VAULT_CODE in messages[1]["content"]


@attack(("PATCH", "/api/v1/conversations/{conversation_id}"),
        ("GET", "/api/v1/conversations/{conversation_id}/messages/{message_id}/stream"))
async def _conversation_rename_and_replay(world: World) -> None:
    """B can neither rename A's conversation nor replay the stream of A's answer (the buffer holds it)."""
    conversation = world.ids["conversation"]
    before = (await world.a.get(f"/api/v1/conversations/{conversation}")).json()["title"]
    not_found(await world.attack("PATCH", f"/api/v1/conversations/{conversation}", json={"title": "Taken over"}))
    assert (await world.a.get(f"/api/v1/conversations/{conversation}")).json()["title"] == before
    messages = (await world.a.get(f"/api/v1/conversations/{conversation}/messages")).json()["messages"]
    replay = f"/api/v1/conversations/{conversation}/messages/{messages[1]['id']}/stream"
    not_found(await world.attack("GET", replay, headers={"Last-Event-ID": "0"}))
    own = await world.a.get(replay)
    assert own.status_code == 200 and VAULT_CODE in own.text  # A's own replay works (and holds the secret)


@attack(("GET", "/api/v1/sync"))
async def _sync(world: World) -> None:
    """B's changes only: none of A's conversations or messages, from the beginning."""
    response = await world.attack("GET", "/api/v1/sync", params={"limit": 1000})
    assert response.status_code == 200, response.text
    assert world.ids["conversation"] not in {c["conversation_id"] for c in response.json()["changes"]}


@attack(("GET", "/api/v1/conversations"))
async def _conversation_list(world: World) -> None:
    response = await world.attack("GET", "/api/v1/conversations", params={"limit": 200})
    assert response.status_code == 200
    assert world.ids["conversation"] not in {c["id"] for c in response.json()["conversations"]}


@attack(("POST", "/api/v1/chat/ask"))
async def _chat_ask(world: World) -> None:
    before, calls = await _a_message_count(world), len(world.model.requests)
    for stream in (False, True):
        response = await world.attack("POST", "/api/v1/chat/ask", json={
            "message": "Add this to your history", "conversation_id": world.ids["conversation"], "stream": stream})
        not_found(response)
    assert await _a_message_count(world) == before and len(world.model.requests) == calls
    # Asked plainly, B is answered from B's documents only, even for A's collection.
    answer = await world.attack("POST", "/api/v1/chat/ask", json={"message": "What is the vault code?"})
    assert answer.status_code == 200, answer.text
    sources = answer.json()["sources"]
    assert sources and {s["document_id"] for s in sources} <= world.b_docs
    scoped = await world.attack("POST", "/api/v1/chat/ask", json={"message": "What is the vault code?",
                                                                  "collection": A_COLLECTION})
    b_own_or_not_found(scoped, lambda body: {s["document_id"] for s in body["sources"]}, world)


async def _ws_answer(world: World, ws: ClientConnection, request: dict[str, Any]) -> list[dict[str, Any]]:
    """B's chat over the socket: every event up to its ``done`` or ``error``, each checked for A's secrets."""
    def inspect(frame: str) -> None:
        leaked = sorted(secret for secret in world.secrets if secret in frame)
        assert not leaked, f"WS /ws ({world.backend}) leaked {leaked}: {frame[:500]}"

    return await ws_exchange(ws, request, inspect=inspect)


@attack(("WS", "/ws"))
async def _websocket(world: World) -> None:
    """B over a real WebSocket (uvicorn on loopback): A's conversation id is not found (nothing stored,
    the model not called), answers come from B's documents only, even for A's collection, and the calls
    are metered to B."""
    b_key = world.b.headers["authorization"].removeprefix("Bearer ")
    before, calls = await _a_message_count(world), len(world.model.requests)
    async with LiveServer(world.running.app, free_port(), lifespan="off") as server, \
            connect(f"{server.ws_url}/ws", subprotocols=[Subprotocol("atrium.bearer"), Subprotocol(b_key)],
                    open_timeout=10) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] == "ready"
        into_a = await _ws_answer(world, ws, {"type": "chat", "id": "into-a", "message": "Add this to your history",
                                              "conversation_id": world.ids["conversation"]})
        assert [event["error"]["code"] for event in into_a] == ["not_found"], into_a
        assert await _a_message_count(world) == before and len(world.model.requests) == calls
        for request_id, scope in (("plain", {}), ("scoped", {"collection": A_COLLECTION})):
            events = await _ws_answer(world, ws, {"type": "chat", "id": request_id,
                                                  "message": "What is the vault code?", **scope})
            if scope and events[-1]["type"] == "error":  # B has no collection of that name
                assert [event["error"]["code"] for event in events] == ["not_found"], events
                continue
            assert events[-1]["type"] == "done", events
            sources = next(event["sources"] for event in events if event["type"] == "sources")
            assert sources or request_id == "scoped", events  # B's own documents answer the plain question
            assert {s["document_id"] for s in sources} <= world.b_docs | world.b_uploaded, sources
            async with world.db.system_session() as session:
                assert await session.scalar(select(Message.org_id).where(
                    Message.id == events[-1]["message_id"])) == ORG_B
    assert await _usage_orgs(world, "/ws", _b_prefix(world)) == {ORG_B}


# --- Knowledge: documents, jobs, search, query -----------------------------------------------------------

@attack(("GET", "/api/v1/documents/{document_id}"), ("DELETE", "/api/v1/documents/{document_id}"))
async def _document_by_id(world: World) -> None:
    document = world.ids["document"]
    not_found(await world.attack("GET", f"/api/v1/documents/{document}"))
    not_found(await world.attack("DELETE", f"/api/v1/documents/{document}"))
    assert (await world.a.get(f"/api/v1/documents/{document}")).status_code == 200
    hits = (await world.a.post("/api/v1/search/semantic", json={"query": "vault code", "mode": "keyword"})).json()
    assert any(VAULT_CODE in hit["text"] for hit in hits["results"])


@attack(("GET", "/api/v1/documents"))
async def _document_list(world: World) -> None:
    listed = await world.attack("GET", "/api/v1/documents", params={"limit": 200})
    assert listed.status_code == 200
    assert {d["id"] for d in listed.json()["documents"]} <= world.b_docs | world.b_uploaded
    in_a_collection = await world.attack("GET", "/api/v1/documents", params={"collection": A_COLLECTION})
    b_own_or_not_found(in_a_collection, lambda body: {d["id"] for d in body["documents"]}, world)


@attack(("POST", "/api/v1/documents"))
async def _document_upload(world: World) -> None:
    """B's upload lands in B: its job and document are invisible to A, and A's collection is untouched."""
    note = ("vault.md", b"# Vault\n\nBravo's own vault notes.\n", "text/plain")
    created = await world.attack("POST", "/api/v1/documents", data={"collection": A_COLLECTION},
                                 files=[("files", note)])
    assert created.status_code == 202, created.text
    job = await wait_job(world.b, created.json()["job_id"])
    assert job["status"] == "succeeded"
    document = job["result"]["documents"][0]["document_id"]
    world.b_uploaded.add(document)
    not_found(await world.a.get(f"/api/v1/jobs/{job['id']}"))
    not_found(await world.a.get(f"/api/v1/documents/{document}"))
    a_docs = (await world.a.get("/api/v1/documents", params={"collection": A_COLLECTION})).json()["documents"]
    assert [d["id"] for d in a_docs] == [world.ids["document"]]


@attack(("GET", "/api/v1/jobs/{job_id}"))
async def _job_by_id(world: World) -> None:
    not_found(await world.attack("GET", f"/api/v1/jobs/{world.ids['job']}"))


@attack(("POST", "/api/v1/jobs/{job_id}/cancel"))
async def _job_cancel(world: World) -> None:
    not_found(await world.attack("POST", f"/api/v1/jobs/{world.ids['job']}/cancel"))
    assert (await world.a.get(f"/api/v1/jobs/{world.ids['job']}")).json()["status"] == "succeeded"


@attack(("POST", "/api/v1/search/semantic"))
async def _search(world: World) -> None:
    for mode in ("hybrid", "vector", "keyword"):
        response = await world.attack("POST", "/api/v1/search/semantic",
                                      json={"query": "vault code alpha desk zanzibar", "mode": mode, "limit": 50})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert results, mode  # B's own documents match: the search works, and shows only B's
        assert {r["document_id"] for r in results} <= world.b_docs | world.b_uploaded, mode
        scoped = await world.attack("POST", "/api/v1/search/semantic", json={
            "query": "vault code", "mode": mode, "collection": A_COLLECTION})
        b_own_or_not_found(scoped, lambda body: {r["document_id"] for r in body["results"]}, world)
        for filters in ({"source": "vault.md"}, {"source": "*"}, {"type": ["md", "txt"]}):  # narrow, never widen
            filtered = await world.attack("POST", "/api/v1/search/semantic", json={
                "query": "vault code alpha zanzibar", "mode": mode, "limit": 50, "filters": filters})
            assert filtered.status_code == 200, filtered.text
            assert {r["document_id"] for r in filtered.json()["results"]} <= world.b_docs | world.b_uploaded


@attack(("POST", "/api/v1/query"))
async def _query_submit(world: World) -> None:
    response = await world.attack("POST", "/api/v1/query", json={"question": "What is the vault code?"})
    assert response.status_code == 201, response.text
    assert {s["document_id"] for s in response.json()["sources"]} <= world.b_docs | world.b_uploaded
    not_found(await world.a.get(f"/api/v1/query/{response.json()['id']}"))


@attack(("GET", "/api/v1/query/{record_id}"))
async def _query_by_id(world: World) -> None:
    not_found(await world.attack("GET", f"/api/v1/query/{world.ids['query']}"))


# --- The model gateway: tenant policy, cache, metering ----------------------------------------------------

async def _usage_orgs(world: World, endpoint: str, key_prefix: str) -> set[str]:
    """The organisations of the usage rows written for ``endpoint`` by the key with ``key_prefix``."""
    await world.running.services.gateway.recorder.flush()
    async with world.db.system_session() as session:
        key_ids = select(ApiKey.id).where(ApiKey.prefix == key_prefix)
        rows = await session.scalars(select(UsageRecord.org_id).where(
            UsageRecord.endpoint == endpoint, UsageRecord.api_key_id.in_(key_ids)).distinct())
        return set(rows)


def _b_prefix(world: World) -> str:
    return world.b.headers["authorization"].removeprefix("Bearer ")[:12]


@attack(("POST", "/v1/chat/completions"))
async def _chat_completions(world: World) -> None:
    refused(await world.attack("POST", "/v1/chat/completions", json={
        "model": "restricted", "messages": [{"role": "user", "content": "hello"}]}))
    # The response cache is per tenant: A's cached answer is never served to B.
    body = {"model": "fake", "messages": [{"role": "user", "content": f"cache probe {world.backend}"}]}
    assert (await world.a.post("/v1/chat/completions", json=body)).status_code == 200
    calls = len(world.model.requests)
    assert (await world.a.post("/v1/chat/completions", json=body)).status_code == 200
    assert len(world.model.requests) == calls  # A's second call: a cache hit
    response = await world.attack("POST", "/v1/chat/completions", json=body)
    assert response.status_code == 200 and len(world.model.requests) == calls + 1
    assert await _usage_orgs(world, "/v1/chat/completions", _b_prefix(world)) == {ORG_B}


@attack(("POST", "/v1/messages"))
async def _anthropic_messages(world: World) -> None:
    body: dict[str, Any] = {"model": "restricted", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    response = await world.attack("POST", "/v1/messages", json=body)
    assert response.status_code in (403, 404) and response.json()["type"] == "error", response.text
    response = await world.attack("POST", "/v1/messages", json=body | {"model": "fake"})
    assert response.status_code == 200, response.text
    assert await _usage_orgs(world, "/v1/messages", _b_prefix(world)) == {ORG_B}


@attack(("POST", "/v1/embeddings"))
async def _embeddings(world: World) -> None:
    response = await world.attack("POST", "/v1/embeddings", json={"model": "hash-bow", "input": "vault code"})
    assert response.status_code == 200, response.text
    assert await _usage_orgs(world, "/v1/embeddings", _b_prefix(world)) == {ORG_B}


@attack(("GET", "/v1/models"), ("GET", "/v1/models/{model_id:path}"))
async def _models(world: World) -> None:
    listed = {m["id"] for m in (await world.attack("GET", "/v1/models")).json()["data"]}
    assert "fake" in listed and "restricted" not in listed
    assert "restricted" in {m["id"] for m in (await world.a.get("/v1/models")).json()["data"]}
    not_found(await world.attack("GET", "/v1/models/restricted"))
    assert (await world.a.get("/v1/models/restricted")).status_code == 200


@attack(("GET", "/metrics"))
async def _metrics(world: World) -> None:
    response = await world.attack("GET", "/metrics")
    assert response.status_code == 200 and "atrium_" in response.text
    assert ORG_B not in response.text  # no tenant, user or key ids in labels


@attack(("GET", "/api/v1/admin/gateway/breakers"), ("POST", "/api/v1/admin/gateway/breakers/{provider}/reset"))
async def _breakers(world: World) -> None:
    """Breakers are per provider, shared by every tenant: no tenant data in them; members cannot act, and
    an org admin other than the platform admin cannot reset one."""
    assert (await world.attack("GET", "/api/v1/admin/gateway/breakers", client=world.b_viewer)).status_code == 403
    reset = await world.attack("POST", "/api/v1/admin/gateway/breakers/vault/reset", client=world.b_viewer)
    assert reset.status_code == 403
    states = (await world.attack("GET", "/api/v1/admin/gateway/breakers")).json()["breakers"]
    assert all(set(state) <= {"provider", "state", "failures", "opened_at", "retry_in_s"} for state in states)
    assert (await world.attack("POST", "/api/v1/admin/gateway/breakers/vault/reset")).status_code == 403


# --- Authentication ----------------------------------------------------------------------------------------

async def _b_login(world: World, **extra: Any) -> httpx.Response:
    return await world.attack("POST", "/api/v1/auth/token",
                              json={"email": world.b_user_email, "password": PASSWORD_B, **extra})


async def _a_session_alive(world: World) -> None:
    response = await world.a.post("/api/v1/auth/refresh", json={"refresh_token": world.a_refresh[-1]})
    assert response.status_code == 200, response.text
    world.a_refresh.append(response.json()["refresh_token"])
    world.secrets.add(response.json()["refresh_token"])


@attack(("POST", "/api/v1/auth/token"))
async def _login(world: World) -> None:
    into_a = await _b_login(world, org_id=world.ids["org"])
    assert into_a.status_code in (401, 403, 404) and "access_token" not in into_a.json()
    # A's member's email with B's password: no session.
    wrong = await world.attack("POST", "/api/v1/auth/token", json={
        "email": world.ids["member_email"], "password": PASSWORD_B}, allow={world.ids["member_email"]})
    assert wrong.status_code == 401 and "access_token" not in wrong.json()
    token = await _b_login(world)
    assert token.status_code == 200 and token.json()["org_id"] == ORG_B
    with_token = client_for(world.running.app, token.json()["access_token"])
    async with with_token:
        not_found(await world.attack("GET", f"/api/v1/conversations/{world.ids['conversation']}",
                                     client=with_token))


@attack(("POST", "/api/v1/auth/refresh"))
async def _refresh(world: World) -> None:
    pair = (await _b_login(world)).json()
    renewed = await world.attack("POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert renewed.status_code == 200 and renewed.json()["org_id"] == ORG_B
    async with client_for(world.running.app, renewed.json()["access_token"]) as with_token:
        not_found(await world.attack("GET", f"/api/v1/documents/{world.ids['document']}", client=with_token))


@attack(("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/revoke"))
async def _logout_and_revoke(world: World) -> None:
    """B ending its own sessions (one, or all) ends none of A's."""
    pair = (await _b_login(world)).json()
    assert (await world.attack("POST", "/api/v1/auth/logout",
                               json={"refresh_token": pair["refresh_token"]})).status_code == 204
    assert (await world.attack("POST", "/api/v1/auth/revoke")).status_code == 200
    await _a_session_alive(world)


# --- Account administration ----------------------------------------------------------------------------

@attack(("GET", "/api/v1/admin/org"))
async def _own_org(world: World) -> None:
    response = await world.attack("GET", "/api/v1/admin/org")
    assert response.status_code == 200 and response.json()["id"] == ORG_B


@attack(("GET", "/api/v1/admin/orgs"), ("POST", "/api/v1/admin/orgs"))
async def _orgs(world: World) -> None:
    """Listing and creating organisations is the platform admin's (A's first owner's), not B's."""
    assert (await world.attack("GET", "/api/v1/admin/orgs")).status_code == 403
    assert (await world.attack("POST", "/api/v1/admin/orgs", json={"name": "Sneaky"})).status_code == 403


async def _a_divisions(world: World) -> set[str]:
    async with world.db.system_session() as session:
        return set(await session.scalars(select(Division.id).where(Division.org_id == world.ids["org"])))


@attack(("GET", "/api/v1/admin/divisions"), ("POST", "/api/v1/admin/divisions"),
        ("DELETE", "/api/v1/admin/divisions/{division_id}"))
async def _divisions(world: World) -> None:
    before = await _a_divisions(world)
    created = await world.attack("POST", "/api/v1/admin/divisions", json={"name": f"Bravo ops {world.backend}"})
    assert created.status_code == 201
    listed = (await world.attack("GET", "/api/v1/admin/divisions")).json()["divisions"]
    assert created.json()["id"] in {d["id"] for d in listed}
    not_found(await world.attack("DELETE", f"/api/v1/admin/divisions/{world.ids['division']}"))
    assert await _a_divisions(world) == before


async def _a_member(world: World, user_id: str) -> tuple[str, str, list[tuple[str, str]]]:
    async with world.db.system_session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        seats = (await session.execute(select(Membership.org_id, Membership.role)
                                       .where(Membership.user_id == user_id))).all()
        return user.name, user.org_id, sorted((str(org), str(role)) for org, role in seats)


@attack(("GET", "/api/v1/admin/users"), ("POST", "/api/v1/admin/users"), ("GET", "/api/v1/admin/users/{user_id}"),
        ("PATCH", "/api/v1/admin/users/{user_id}"), ("DELETE", "/api/v1/admin/users/{user_id}"))
async def _users(world: World) -> None:
    member = world.ids["member"]
    before = await _a_member(world, member)
    listed = await world.attack("GET", "/api/v1/admin/users", params={"limit": 200})
    assert listed.status_code == 200 and listed.json()["users"]
    not_found(await world.attack("GET", f"/api/v1/admin/users/{member}"))
    not_found(await world.attack("PATCH", f"/api/v1/admin/users/{member}", json={"name": "Pwned", "role": "owner"}))
    not_found(await world.attack("DELETE", f"/api/v1/admin/users/{member}"))
    refused(await world.attack("POST", "/api/v1/admin/users", json={
        "email": f"new-{world.backend}@bravo.example", "name": "New", "division_id": world.ids["division"]}))
    assert await _a_member(world, member) == before


@attack(("POST", "/api/v1/admin/memberships"), ("DELETE", "/api/v1/admin/memberships/{user_id}"))
async def _memberships(world: World) -> None:
    member = world.ids["member"]
    before = await _a_member(world, member)
    not_found(await world.attack("DELETE", f"/api/v1/admin/memberships/{member}"))
    refused(await world.attack("POST", "/api/v1/admin/memberships", json={
        "email": world.ids["member_email"], "division_id": world.ids["division"]}, allow={world.ids["member_email"]}))
    # Adding a user of A by email is an invitation of B's, which the user may accept: until then nothing of
    # the user changes, in A or in B.
    joiner_before = await _a_member(world, world.ids["joiner"])
    invited = await world.attack("POST", "/api/v1/admin/memberships", json={"email": world.ids["joiner_email"]})
    assert invited.status_code == 202 and invited.json()["status"] == "pending", invited.text
    assert await _invitation_org(world, invited.json()["id"]) == ORG_B
    assert await _a_member(world, world.ids["joiner"]) == joiner_before
    assert await _a_member(world, member) == before


async def _invitation_org(world: World, invitation_id: str) -> str | None:
    async with world.db.system_session() as session:
        return await session.scalar(select(Invitation.org_id).where(Invitation.id == invitation_id))


async def _a_invitation(world: World) -> tuple[str, str]:
    async with world.db.system_session() as session:
        row = (await session.execute(select(Invitation.status, Invitation.email).where(
            Invitation.id == world.ids["invitation"]))).one()
        return str(row[0]), str(row[1])


@attack(("GET", "/api/v1/admin/invitations"), ("POST", "/api/v1/admin/invitations"),
        ("DELETE", "/api/v1/admin/invitations/{invitation_id}"))
async def _admin_invitations(world: World) -> None:
    """B's admins see and revoke B's invitations only; inviting into A's division is refused, and
    inviting A's users' emails makes an invitation of B's that changes nothing in A."""
    before, member = await _a_invitation(world), await _a_member(world, world.ids["member"])
    refused(await world.attack("POST", "/api/v1/admin/invitations", json={
        "email": f"new-{world.backend}@bravo.example", "division_id": world.ids["division"]}))
    invited = await world.attack("POST", "/api/v1/admin/invitations", json={"email": world.ids["member_email"]},
                                 allow={world.ids["member_email"]})
    assert invited.status_code == 202, invited.text
    assert await _invitation_org(world, invited.json()["id"]) == ORG_B
    listed = await world.attack("GET", "/api/v1/admin/invitations", params={"limit": 200},
                                allow={world.ids["member_email"]})
    assert listed.status_code == 200 and invited.json()["id"] in {i["id"] for i in listed.json()["invitations"]}
    not_found(await world.attack("DELETE", f"/api/v1/admin/invitations/{world.ids['invitation']}"))
    assert await _a_invitation(world) == before and await _a_member(world, world.ids["member"]) == member


@attack(("GET", "/api/v1/invitations"), ("POST", "/api/v1/invitations/{invitation_id}/accept"),
        ("POST", "/api/v1/invitations/{invitation_id}/decline"))
async def _my_invitations(world: World) -> None:
    """A's invitation (of an email not B's) is not in B's inbox, and B can neither accept nor decline it."""
    before = await _a_invitation(world)
    inbox = await world.attack("GET", "/api/v1/invitations")
    assert inbox.status_code == 200, inbox.text
    async with await _b_user_session(world, f"invitee-{world.backend}@bravo.example") as user:
        assert (await world.attack("GET", "/api/v1/invitations", client=user)).json()["invitations"] == []
        for action in ("accept", "decline"):
            not_found(await world.attack("POST", f"/api/v1/invitations/{world.ids['invitation']}/{action}",
                                         client=user))
            not_found(await world.attack("POST", f"/api/v1/invitations/{world.ids['invitation']}/{action}"))
    assert await _a_invitation(world) == before


@attack(("GET", "/api/v1/admin/service-accounts"), ("POST", "/api/v1/admin/service-accounts"))
async def _service_accounts(world: World) -> None:
    refused(await world.attack("POST", "/api/v1/admin/service-accounts",
                               json={"name": "bravo bot", "division_id": world.ids["division"]}))
    created = await world.attack("POST", "/api/v1/admin/service-accounts", json={"name": "bravo bot"})
    assert created.status_code == 201
    listed = (await world.attack("GET", "/api/v1/admin/service-accounts")).json()["service_accounts"]
    assert created.json()["id"] in {s["id"] for s in listed}


async def _a_keys(world: World) -> list[tuple[str, Any]]:
    async with world.db.system_session() as session:
        rows = await session.execute(select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.org_id == world.ids["org"]))
        return sorted((str(key_id), revoked) for key_id, revoked in rows)


@attack(("GET", "/api/v1/admin/keys"), ("POST", "/api/v1/admin/keys"), ("DELETE", "/api/v1/admin/keys/{key_id}"),
        ("POST", "/api/v1/admin/keys/{key_id}/rotate"))
async def _keys(world: World) -> None:
    before = await _a_keys(world)
    not_found(await world.attack("DELETE", f"/api/v1/admin/keys/{world.ids['key']}"))
    not_found(await world.attack("POST", f"/api/v1/admin/keys/{world.ids['key']}/rotate"))
    for body in ({"user_id": world.ids["member"]}, {"service_account_id": world.ids["service"]},
                 {"division_id": world.ids["division"]}):
        refused(await world.attack("POST", "/api/v1/admin/keys", json={"name": "sneaky", **body}))
    created = await world.attack("POST", "/api/v1/admin/keys", json={"name": f"bravo {world.backend}"})
    assert created.status_code == 201
    listed = (await world.attack("GET", "/api/v1/admin/keys", params={"include_revoked": True})).json()["keys"]
    assert created.json()["id"] in {k["id"] for k in listed}
    assert await _a_keys(world) == before
    async with client_for(world.running.app, world.ids["member_key"]) as member:
        assert (await member.get("/v1/models")).status_code == 200  # A's key still works


@attack(("GET", "/api/v1/admin/audit"))
async def _audit(world: World) -> None:
    # A's org id and a user's email may appear only where B itself typed them (a refused login into A, an
    # invitation of B's to that email are B's own events).
    email = world.ids["member_email"]
    response = await world.attack("GET", "/api/v1/admin/audit", params={"limit": 200},
                                  allow={world.ids["org"], email})
    assert response.status_code == 200 and response.json()["events"]
    for event in response.json()["events"]:
        if world.ids["org"] in json.dumps(event):
            assert (event.get("details") or {}).get("requested_org_id") == world.ids["org"], event
        if email in json.dumps(event):
            assert event["action"] == "invitation.create" and event["details"]["email"] == email, event


# --- Guard policy ----------------------------------------------------------------------------------------

async def _a_policy(world: World) -> Any:
    async with world.db.system_session() as session:
        row = await session.get(OrgPolicy, world.ids["org"])
        return row.policy if row is not None else None


@attack(("GET", "/api/v1/admin/policy"), ("PUT", "/api/v1/admin/policy"))
async def _policy(world: World) -> None:
    """The policy routes take no organisation: B reads and replaces its own, never A's."""
    read = await world.attack("GET", "/api/v1/admin/policy")
    assert read.status_code == 200 and read.json()["org_id"] == ORG_B, read.text
    body = {"output": {"link_domains": ["bravo.example"]}}
    written = await world.attack("PUT", "/api/v1/admin/policy", json=body)
    assert written.status_code == 200 and written.json()["overrides"] == body, written.text
    assert await _a_policy(world) == A_POLICY


# --- Budgets ---------------------------------------------------------------------------------------------

async def _a_budgets(world: World) -> list[tuple[str, str, int]]:
    async with world.db.system_session() as session:
        rows = await session.execute(select(Budget.id, Budget.subject_id, Budget.limit_micro_usd)
                                     .where(Budget.org_id == world.ids["org"]))
        return sorted((str(i), str(s), int(limit)) for i, s, limit in rows)


@attack(("PUT", "/api/v1/admin/budgets"), ("GET", "/api/v1/admin/budgets"),
        ("DELETE", "/api/v1/admin/budgets/{budget_id}"), ("POST", "/api/v1/admin/budgets/{budget_id}/reset"),
        ("GET", "/api/v1/budget"))
async def _budgets(world: World) -> None:
    before = await _a_budgets(world)
    for scope, subject in (("org", world.ids["org"]), ("user", world.ids["member"]), ("key", world.ids["key"])):
        refused(await world.attack("PUT", "/api/v1/admin/budgets", json={
            "scope": scope, "subject_id": subject, "period": "month", "limit_usd": "0.01"}))
    own = await world.attack("PUT", "/api/v1/admin/budgets", json={"scope": "org", "period": "total",
                                                                    "limit_usd": "1000"})
    assert own.status_code in (200, 201), own.text
    budget = world.ids["budget"]
    not_found(await world.attack("DELETE", f"/api/v1/admin/budgets/{budget}"))
    not_found(await world.attack("POST", f"/api/v1/admin/budgets/{budget}/reset"))
    listed = await world.attack("GET", "/api/v1/admin/budgets")
    assert listed.status_code == 200 and listed.json()["budgets"]
    mine = await world.attack("GET", "/api/v1/budget")
    assert mine.status_code == 200 and mine.json()["budgets"]
    assert await _a_budgets(world) == before


# --- Collections, admin conversation routes, data rights ---------------------------------------------------

async def _a_collections(world: World) -> list[tuple[str, str, str, str | None]]:
    async with world.db.system_session() as session:
        rows = await session.execute(select(Collection.name, Collection.visibility, Collection.writers,
                                            Collection.user_id).where(Collection.org_id == world.ids["org"]))
        return sorted((str(n), str(v), str(w), u) for n, v, w, u in rows)


async def _b_collection_names(world: World) -> set[str]:
    async with world.db.system_session() as session:
        return set(await session.scalars(select(Collection.name).where(Collection.org_id == ORG_B)))


@attack(("GET", "/api/v1/collections"), ("POST", "/api/v1/collections"))
async def _collection_list_and_create(world: World) -> None:
    """B lists only B's collections; a name A uses is free in B (a 409 would tell B that A has it), and
    taking it changes nothing of A's."""
    before = await _a_collections(world)
    created = await world.attack("POST", "/api/v1/collections", json={"name": A_LEDGER, "visibility": "private"})
    assert created.status_code == 201, created.text
    assert created.json()["owner_user_id"] not in {world.ids["member"], world.ids["joiner"]}
    listed = await world.attack("GET", "/api/v1/collections", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    names = {c["name"] for c in listed.json()["collections"]}
    assert A_LEDGER in names and names <= await _b_collection_names(world)
    assert await _a_collections(world) == before


@attack(("GET", "/api/v1/collections/{name}"), ("PATCH", "/api/v1/collections/{name}"),
        ("DELETE", "/api/v1/collections/{name}"))
async def _collection_by_name(world: World) -> None:
    before = await _a_collections(world)
    not_found(await world.attack("GET", f"/api/v1/collections/{A_SHELF}"))
    not_found(await world.attack("PATCH", f"/api/v1/collections/{A_SHELF}", json={"visibility": "org"}))
    not_found(await world.attack("DELETE", f"/api/v1/collections/{A_SHELF}"))
    assert await _a_collections(world) == before
    assert (await world.a.get(f"/api/v1/collections/{A_SHELF}")).status_code == 200


# --- Artifacts -------------------------------------------------------------------------------------------------

@attack(("GET", "/api/v1/artifacts/{artifact_id}"), ("GET", "/api/v1/artifacts/{artifact_id}/versions"),
        ("GET", "/api/v1/artifacts/{artifact_id}/versions/{number}"), ("GET", "/api/v1/artifacts/{artifact_id}/export"),
        ("PATCH", "/api/v1/artifacts/{artifact_id}"), ("DELETE", "/api/v1/artifacts/{artifact_id}"))
async def _artifact_by_id(world: World) -> None:
    path = f"/api/v1/artifacts/{world.ids['artifact']}"
    for suffix in ("", "/versions", "/versions/1", "/export"):
        not_found(await world.attack("GET", path + suffix))
    not_found(await world.attack("PATCH", path, json={"title": "Taken over", "visibility": "private"}))
    not_found(await world.attack("DELETE", path))
    kept = await world.a.get(path)
    assert kept.status_code == 200 and kept.json()["version"] == 1 and kept.json()["visibility"] == "org"


@attack(("GET", "/api/v1/artifacts"), ("POST", "/api/v1/artifacts"), ("POST", "/api/v1/artifacts/generate"),
        ("POST", "/api/v1/artifacts/search"))
async def _artifact_list_create_search(world: World) -> None:
    """B's artifacts land in B; B lists and finds only them, and cannot attach one to A's conversation or
    ground one on A's collection."""
    into_a = {"kind": "markdown", "title": "Bravo note", "content": {"text": "Bravo's vault code notes."},
              "conversation_id": world.ids["conversation"]}
    not_found(await world.attack("POST", "/api/v1/artifacts", json=into_a))
    calls = len(world.model.requests)
    not_found(await world.attack("POST", "/api/v1/artifacts/generate", json={  # the error names what B sent
        "prompt": "The vault code", "kind": "markdown", "collection": A_SHELF}, allow={A_SHELF}))
    not_found(await world.attack("POST", "/api/v1/artifacts/generate", json={
        "prompt": "The vault code", "conversation_id": world.ids["conversation"]}))
    assert len(world.model.requests) == calls
    made = await world.attack("POST", "/api/v1/artifacts", json={**into_a, "conversation_id": None,
                                                                  "visibility": "org"})
    assert made.status_code == 201, made.text
    generated = await world.attack("POST", "/api/v1/artifacts/generate", json={
        "prompt": "What is the vault code?", "kind": "table", "visibility": "org"})
    assert generated.status_code == 201, generated.text
    mine = {made.json()["id"], generated.json()["id"]}
    listed = await world.attack("GET", "/api/v1/artifacts", params={"limit": 200})
    assert {row["id"] for row in listed.json()["artifacts"]} == mine
    for mode in ("hybrid", "vector", "keyword"):
        found = await world.attack("POST", "/api/v1/artifacts/search", json={"query": "vault code", "mode": mode})
        assert found.status_code == 200, found.text
        assert {hit["artifact"]["id"] for hit in found.json()["results"]} <= mine, mode
    for artifact in mine:
        not_found(await world.a.get(f"/api/v1/artifacts/{artifact}"))
    a_found = await world.a.post("/api/v1/artifacts/search", json={"query": "vault code", "mode": "keyword"})
    assert [hit["artifact"]["id"] for hit in a_found.json()["results"]] == [world.ids["artifact"]]


async def _a_conversations(world: World) -> set[str]:
    async with world.db.system_session() as session:
        return set(await session.scalars(select(Conversation.id).where(Conversation.org_id == world.ids["org"])))


@attack(("GET", "/api/v1/admin/conversations"), ("DELETE", "/api/v1/admin/conversations/{conversation_id}"))
async def _admin_conversations(world: World) -> None:
    """B's owner administers B's conversations only: A's are neither listed nor erasable (404)."""
    before, messages = await _a_conversations(world), await _a_message_count(world)
    listed = await world.attack("GET", "/api/v1/admin/conversations", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    not_found(await world.attack("DELETE", f"/api/v1/admin/conversations/{world.ids['conversation']}"))
    for user in (world.ids["member"], world.ids["joiner"]):
        by_user = await world.attack("GET", "/api/v1/admin/conversations", params={"user_id": user},
                                     allow={user})
        assert by_user.status_code == 200 and by_user.json()["conversations"] == [], by_user.text
    assert await _a_conversations(world) == before and await _a_message_count(world) == messages


async def _b_user_session(world: World, email: str) -> httpx.AsyncClient:
    """A fresh user of B with a password, logged in (an access token)."""
    async with world.db.system_session() as session:
        user = User(org_id=ORG_B, email=email, name="Bravo Leaver", role="member",
                    password_hash=await password_hash(PASSWORD_B))
        session.add(user)
        await session.flush()
        session.add(Membership(org_id=ORG_B, user_id=user.id, role="member"))
    login = await world.b.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD_B})
    assert login.status_code == 200, login.text
    return client_for(world.running.app, login.json()["access_token"])


@attack(("GET", "/api/v1/me/export"), ("DELETE", "/api/v1/me"))
async def _data_rights(world: World) -> None:
    """B's export holds nothing of A's; a user of B erasing their account erases nothing of A's."""
    exported = await world.attack("GET", "/api/v1/me/export")
    assert exported.status_code == 200, exported.text
    before = (await _a_conversations(world), await _a_message_count(world), await _a_collections(world),
              await _a_member(world, world.ids["member"]))
    async with await _b_user_session(world, f"leaver-{world.backend}@bravo.example") as leaver:
        mine = await world.attack("GET", "/api/v1/me/export", client=leaver)
        assert mine.status_code == 200 and mine.json()["conversations"] == [], mine.text
        erased = await world.attack("DELETE", "/api/v1/me", client=leaver)
        assert erased.status_code == 200, erased.text
    after = (await _a_conversations(world), await _a_message_count(world), await _a_collections(world),
             await _a_member(world, world.ids["member"]))
    assert after == before
    assert (await world.a.get(f"/api/v1/documents/{world.ids['document']}")).status_code == 200


# --- The agents API ------------------------------------------------------------------------------------------

AGENT_SECRET = "alpha-agent-secret-word"


async def _seed_agents(a: httpx.AsyncClient) -> dict[str, str]:
    """A's organisation-visible thread with a finished run (its state holds a secret word)."""
    made = await a.post("/threads", json={"visibility": "org", "metadata": {"secret": AGENT_SECRET}})
    assert made.status_code == 200, made.text
    thread = made.json()["thread_id"]
    waited = await a.post(f"/threads/{thread}/runs/wait", json={
        "assistant_id": "echo", "input": {"messages": [{"role": "user", "content": AGENT_SECRET}]}})
    assert waited.status_code == 200, waited.text
    run = (await a.get(f"/threads/{thread}/runs")).json()[0]["run_id"]
    checkpoint = (await a.get(f"/threads/{thread}/state")).json()["checkpoint"]["checkpoint_id"]
    return {"agent_thread": thread, "agent_run": run, "agent_checkpoint": checkpoint, "agent_word": AGENT_SECRET}


_THREAD_ROUTES = (("GET", "/threads/{thread_id}"), ("PATCH", "/threads/{thread_id}"),
                  ("DELETE", "/threads/{thread_id}"), ("GET", "/threads/{thread_id}/state"),
                  ("POST", "/threads/{thread_id}/state"), ("GET", "/threads/{thread_id}/state/{checkpoint_id}"),
                  ("GET", "/threads/{thread_id}/history"), ("POST", "/threads/{thread_id}/history"),
                  ("POST", "/threads/{thread_id}/runs"), ("POST", "/threads/{thread_id}/runs/stream"),
                  ("POST", "/threads/{thread_id}/runs/wait"), ("GET", "/threads/{thread_id}/runs"),
                  ("GET", "/threads/{thread_id}/runs/{run_id}"), ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"),
                  ("GET", "/threads/{thread_id}/runs/{run_id}/join"),
                  ("GET", "/threads/{thread_id}/runs/{run_id}/stream"))
_BODIES = {"PATCH": {"metadata": {"taken": "by b"}}, "POST": {"assistant_id": "echo", "values": {"name": "B"},
                                                             "input": {"messages": [{"role": "user", "content": "B"}]}}}


@attack(*_THREAD_ROUTES, ("POST", "/threads"), ("POST", "/threads/search"), ("GET", "/assistants/{assistant_id}"),
        ("POST", "/assistants/search"), ("GET", "/assistants/{assistant_id}/graph"))
async def _agent_threads(world: World) -> None:
    """B reaches none of A's threads (even organisation-visible ones), runs or checkpoints: 404 everywhere,
    nothing of A's in a search, and A's thread unchanged."""
    ids = world.ids
    before = (await world.a.get(f"/threads/{ids['agent_thread']}/state")).json()
    for method, path in _THREAD_ROUTES:
        target = path.format(thread_id=ids["agent_thread"], run_id=ids["agent_run"],
                             checkpoint_id=ids["agent_checkpoint"])
        kwargs = {"json": _BODIES[method]} if method in _BODIES and not path.endswith("/cancel") else {}
        not_found(await world.attack(method, target, **kwargs))
    searched = await world.attack("POST", "/threads/search", json={"limit": 1000})
    assert searched.status_code == 200 and searched.json() == [], searched.text
    mine = await world.attack("POST", "/threads", json={"metadata": {"secret": "b's own"}})
    assert mine.status_code == 200, mine.text
    for method, path in (("GET", "/assistants/echo"), ("POST", "/assistants/search"),
                         ("GET", "/assistants/echo/graph")):
        answer = await world.attack(method, path, json={} if method == "POST" else None)
        assert answer.status_code == 200, answer.text
    after = (await world.a.get(f"/threads/{ids['agent_thread']}/state")).json()
    metadata = (await world.a.get(f"/threads/{ids['agent_thread']}")).json()["metadata"]
    assert after == before and metadata["secret"] == AGENT_SECRET and "taken" not in metadata


# --- Guided flows and project records --------------------------------------------------------------------

FLOW_SECRET = "Alpha flow secret title"
PROJECT_SECRET = "Alpha public project"


async def _seed_flows(a: httpx.AsyncClient) -> dict[str, str]:
    """A's project flow waiting for its description (its title a secret), and A's org-visible project."""
    ids: dict[str, str] = {}
    for name, answers in (("flow", [FLOW_SECRET]),
                          ("project", [PROJECT_SECRET, "Alpha's plans.", "other", "public", "yes"])):
        made = await a.post("/api/v1/flows/project")
        assert made.status_code == 201, made.text
        ids[f"a_{name}"] = made.json()["id"]
        for answer in answers:
            answered = await a.post(f"/api/v1/flows/{ids[f'a_{name}']}/answer", json={"answer": answer})
            assert answered.status_code == 200, answered.text
    ids["a_project"] = answered.json()["result"]["project_id"]
    ids["flow_word"], ids["project_word"] = FLOW_SECRET, PROJECT_SECRET
    return ids


@attack(("GET", "/api/v1/flows"), ("POST", "/api/v1/flows/{flow_name}"), ("GET", "/api/v1/flows/{flow_id}"),
        ("POST", "/api/v1/flows/{flow_id}/answer"), ("POST", "/api/v1/flows/{flow_id}/cancel"),
        ("GET", "/api/v1/projects"), ("GET", "/api/v1/projects/{project_id}"))
async def _flows_and_projects(world: World) -> None:
    """B reaches none of A's flows (404: read, answer, cancel) nor projects (even org-visible ones); its own
    flow and project are B's; A's flow is untouched."""
    ids = world.ids
    flow = ids["a_flow"]
    before = (await world.a.get(f"/api/v1/flows/{flow}")).json()
    not_found(await world.attack("GET", f"/api/v1/flows/{flow}"))
    not_found(await world.attack("POST", f"/api/v1/flows/{flow}/answer", json={"answer": "B's description"}))
    not_found(await world.attack("POST", f"/api/v1/flows/{flow}/cancel"))
    not_found(await world.attack("GET", f"/api/v1/projects/{ids['a_project']}"))
    assert (await world.attack("GET", "/api/v1/flows")).status_code == 200
    mine = await world.attack("POST", "/api/v1/flows/project")
    assert mine.status_code == 201, mine.text
    for answer in ("Bravo project", "B's plans.", "other", "public", "yes"):
        answered = await world.attack("POST", f"/api/v1/flows/{mine.json()['id']}/answer", json={"answer": answer})
        assert answered.status_code == 200, answered.text
    b_project = answered.json()["result"]["project_id"]
    listed = await world.attack("GET", "/api/v1/projects", params={"limit": 200})
    assert [p["id"] for p in listed.json()["projects"]] == [b_project], listed.text
    assert ids["a_project"] in {p["id"] for p in (await world.a.get("/api/v1/projects")).json()["projects"]}
    not_found(await world.a.get(f"/api/v1/projects/{b_project}"))
    after = (await world.a.get(f"/api/v1/flows/{flow}")).json()
    assert after == before and after["prompt"]["step"] == "description" and after["values"]["title"] == FLOW_SECRET
@attack(("POST", "/api/v1/notifications/devices"), ("GET", "/api/v1/notifications/devices"),
        ("DELETE", "/api/v1/notifications/devices/{device_id}"), ("GET", "/api/v1/notifications/vapid-public-key"))
async def _notification_devices(world: World) -> None:
    """B neither sees nor removes A's device, and registering A's very endpoint gives B a device of its
    own (A's stays A's)."""
    device = world.ids["device"]
    not_found(await world.attack("DELETE", f"/api/v1/notifications/devices/{device}"))
    listed = await world.attack("GET", "/api/v1/notifications/devices")
    assert listed.status_code == 200 and device not in {d["id"] for d in listed.json()["devices"]}
    taken = await world.attack("POST", "/api/v1/notifications/devices", json=browser_subscription(A_PUSH_ENDPOINT))
    assert taken.status_code == 201 and taken.json()["id"] != device, taken.text
    key = await world.attack("GET", "/api/v1/notifications/vapid-public-key")
    assert key.status_code == 200
    mine = (await world.a.get("/api/v1/notifications/devices")).json()["devices"]
    assert [d["id"] for d in mine] == [device]


# Last, so that every case above is registered when the parameters are collected. A case covering
# several routes runs once.
@pytest.mark.parametrize("case", list(dict.fromkeys(CASES.values())), ids=lambda case: case.__name__.strip("_"))
async def test_tenant_b_cannot_reach_tenant_a(world: World, case: Case) -> None:
    await case(world)
