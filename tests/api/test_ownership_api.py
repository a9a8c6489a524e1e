"""Ownership inside one organisation (issue 11, items 1 and 5 and the data rights): conversations, queries and
jobs are private to their creator; collections are organisation-wide, division-wide or private; admins list
and erase conversations (audited) but never read them; a user exports and erases their own data.

Every check here failed before ownership existed: any member could read, continue or delete anyone's
conversation, a key without a user listed every conversation, and a division member searched every
division's documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from atrium.accounts.api_keys import create_key
from atrium.store.models import AgentThread, Chunk, Conversation, Document, Message, QueryRecord, UsageRecord, User
from tests.api.auth_helpers import admin_org, audit_rows, bearer, login
from tests.api.helpers import upload, wait_job
from tests.conftest import RunningApp, run_app

PASSWORD = "a-long-enough-password"
D1_SECRET = "The D1 launch code is ORCHID-4471."
ORG_TEXT = "# Handbook\n\nThe cafeteria opens at nine. Everyone may read the handbook.\n"


@dataclass
class Org:
    app: RunningApp
    owner: httpx.AsyncClient
    alice: httpx.AsyncClient  # member
    bob: httpx.AsyncClient  # member
    viewer: httpx.AsyncClient
    d1: httpx.AsyncClient  # member of division D1
    d2: httpx.AsyncClient  # member of division D2
    d1_admin: httpx.AsyncClient
    keyless: httpx.AsyncClient  # an API key that acts as no user
    ids: dict[str, str]


def _client(app: RunningApp, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=app.client._transport, base_url="http://atrium.test", headers=bearer(token))


async def _user(app: RunningApp, email: str, role: str, division_id: str | None = None) -> tuple[str, str]:
    body = {"email": email, "name": email.split("@")[0], "role": role, "password": PASSWORD}
    if division_id is not None:
        body["division_id"] = division_id
    created = await app.client.post("/api/v1/admin/users", json=body)
    assert created.status_code == 201, created.text
    token = await login(app.client, email, PASSWORD)
    assert token.status_code == 200, token.text
    return created.json()["id"], token.json()["access_token"]


@pytest.fixture
async def org(settings) -> AsyncIterator[Org]:  # type: ignore[no-untyped-def]
    async with run_app(settings) as app:
        divisions = {}
        for name in ("D1", "D2"):
            made = await app.client.post("/api/v1/admin/divisions", json={"name": name})
            assert made.status_code == 201, made.text
            divisions[name] = made.json()["id"]
        ids: dict[str, str] = {"D1": divisions["D1"], "D2": divisions["D2"]}
        tokens = {}
        for name, role, division in (("alice", "member", None), ("bob", "member", None), ("viewer", "viewer", None),
                                     ("d1", "member", "D1"), ("d2", "member", "D2"), ("d1_admin", "admin", "D1")):
            ids[name], tokens[name] = await _user(app, f"{name}@example.com", role,
                                                  divisions[division] if division else None)
        # What `atrium keys create` without --user makes: a key that acts as no user.
        async with app.services.db.system_session() as session:
            _, raw_key = await create_key(session, org_id=await admin_org(app), user_id=None, role="member",
                                          name="no user")
        clients = {name: _client(app, token) for name, token in tokens.items()}
        keyless = _client(app, raw_key)
        try:
            yield Org(app=app, owner=app.client, keyless=keyless, ids=ids, **clients)
        finally:
            for client in (*clients.values(), keyless):
                await client.aclose()


async def _ask(client: httpx.AsyncClient, message: str, **extra: object) -> httpx.Response:
    return await client.post("/api/v1/chat/ask", json={"message": message, **extra})


async def _message_count(app: RunningApp, conversation_id: str) -> int:
    async with app.services.db.system_session() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)
                                        .where(Message.conversation_id == conversation_id)) or 0)


async def test_a_conversation_is_private_to_its_owner(org: Org) -> None:
    asked = await _ask(org.alice, "My salary is 91,000 and I want a raise.")
    assert asked.status_code == 200, asked.text
    conversation = asked.json()["conversation_id"]
    before = await _message_count(org.app, conversation)
    for other in (org.bob, org.viewer, org.d1, org.owner, org.d1_admin, org.keyless):
        for path in (f"/api/v1/conversations/{conversation}", f"/api/v1/conversations/{conversation}/messages"):
            response = await other.get(path)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
        # A viewer may delete nothing (403 whatever the id); everyone else is told it does not exist.
        deleted = await other.delete(f"/api/v1/conversations/{conversation}")
        assert deleted.status_code == (403 if other is org.viewer else 404)
        listed = (await other.get("/api/v1/conversations")).json()["conversations"]
        assert conversation not in {row["id"] for row in listed}
        # Writing into it would send the victim's earlier turns to the model in the attacker's call.
        hijack = await _ask(other, "Repeat everything said before.", conversation_id=conversation)
        assert hijack.status_code == 404, hijack.text
    assert await _message_count(org.app, conversation) == before
    assert (await org.alice.get(f"/api/v1/conversations/{conversation}/messages")).status_code == 200
    assert conversation in {row["id"] for row in (await org.alice.get("/api/v1/conversations")).json()["conversations"]}


async def test_a_key_without_a_user_sees_only_its_own_conversations(org: Org) -> None:
    alices = (await _ask(org.alice, "hello from alice")).json()["conversation_id"]
    own = (await _ask(org.keyless, "hello from the service")).json()["conversation_id"]
    listed = {row["id"] for row in (await org.keyless.get("/api/v1/conversations")).json()["conversations"]}
    assert listed == {own}
    assert alices not in {row["id"] for row in (await org.bob.get("/api/v1/conversations")).json()["conversations"]}
    continued = await _ask(org.keyless, "and again", conversation_id=own)
    assert continued.status_code == 200
    async with org.app.services.db.system_session() as session:
        row = await session.get(Conversation, own)
    assert row is not None and row.user_id is None and row.api_key_id is not None


async def test_a_query_record_is_private(org: Org) -> None:
    made = await org.alice.post("/api/v1/query", json={"question": "What is my bonus?"})
    assert made.status_code in (201, 202), made.text
    record = made.json()["id"]
    for other in (org.bob, org.owner, org.keyless, org.viewer):
        assert (await other.get(f"/api/v1/query/{record}")).status_code == 404
    assert (await org.alice.get(f"/api/v1/query/{record}")).status_code == 200


async def test_a_job_is_private_to_who_queued_it(org: Org) -> None:
    queued = await upload(org.alice, {"notes.md": "# Notes\n\nalice's notes\n"}, collection="alice-notes")
    job = queued["job_id"]
    await wait_job(org.alice, job)
    for other in (org.bob, org.owner, org.keyless):
        assert (await other.get(f"/api/v1/jobs/{job}")).status_code == 404


async def test_divisions_scope_documents_and_search(org: Org) -> None:
    queued = await upload(org.d1, {"plans.md": f"# Plans\n\n{D1_SECRET}\n"}, collection="d1-plans")
    await wait_job(org.d1, queued["job_id"])
    collection = (await org.d1.get("/api/v1/collections/d1-plans")).json()
    assert collection["visibility"] == "division" and collection["division_id"] == org.ids["D1"]
    handbook = await upload(org.owner, {"handbook.md": ORG_TEXT}, collection="handbook")
    await wait_job(org.owner, handbook["job_id"])
    d1_documents = {row["id"] for row in (await org.d1.get("/api/v1/documents")).json()["documents"]}
    assert len(d1_documents) == 2  # its division's and the organisation's
    handbook_ids = {row["id"] for row in
                    (await org.owner.get("/api/v1/documents?collection=handbook")).json()["documents"]}
    plans = next(iter(d1_documents - handbook_ids))
    for outsider in (org.d2, org.alice, org.viewer, org.keyless):
        listed = (await outsider.get("/api/v1/documents")).json()["documents"]
        assert {row["collection"] for row in listed} == {"handbook"}
        assert (await outsider.get(f"/api/v1/documents/{plans}")).status_code == 404
        assert (await outsider.get("/api/v1/documents?collection=d1-plans")).status_code == 404
        for mode in ("keyword", "vector", "hybrid"):
            found = await outsider.post("/api/v1/search/semantic", json={"query": "launch code ORCHID", "mode": mode})
            assert found.status_code == 200
            assert all("ORCHID" not in hit["text"] for hit in found.json()["results"]), (mode, found.json())
        named = await outsider.post("/api/v1/search/semantic", json={"query": "launch code", "collection": "d1-plans"})
        assert named.status_code == 404
        answer = await _ask(outsider, "What is the D1 launch code?")
        assert "ORCHID" not in answer.text
        deleted = await outsider.delete(f"/api/v1/documents/{plans}")
        assert deleted.status_code == (403 if outsider is org.viewer else 404)
    searched = await org.d1.post("/api/v1/search/semantic", json={"query": "launch code ORCHID", "mode": "keyword"})
    assert any("ORCHID" in hit["text"] for hit in searched.json()["results"])
    # The organisation's unscoped admins administer every division: the owner reads it.
    owner_view = await org.owner.post("/api/v1/search/semantic",
                                      json={"query": "launch code ORCHID", "mode": "keyword"})
    assert any("ORCHID" in hit["text"] for hit in owner_view.json()["results"])


async def test_private_collections_and_writers(org: Org) -> None:
    made = await org.alice.post("/api/v1/collections", json={"name": "alice-private", "visibility": "private"})
    assert made.status_code == 201, made.text
    queued = await upload(org.alice, {"diary.md": "# Diary\n\nThe secret word is PERIWINKLE.\n"},
                          collection="alice-private")
    await wait_job(org.alice, queued["job_id"])
    for other in (org.bob, org.owner, org.keyless):
        assert (await other.get("/api/v1/collections/alice-private")).status_code == 404
        found = await other.post("/api/v1/search/semantic", json={"query": "PERIWINKLE", "mode": "keyword"})
        assert found.json()["results"] == []
        # A filter naming the private document (exactly, by prefix, by type) narrows, never widens.
        for filters in ({"source": "diary.md"}, {"source": "*"}, {"type": ["md"]},
                        {"source": "diary*", "created_after": "2000-01-01"}):
            for mode in ("keyword", "vector", "hybrid"):
                filtered = await other.post("/api/v1/search/semantic", json={
                    "query": "PERIWINKLE secret word diary", "mode": mode, "filters": filters})
                assert filtered.status_code == 200, filtered.text
                assert all(hit["source"] != "diary.md" for hit in filtered.json()["results"]), (filters, mode)
        refused = await other.post("/api/v1/documents", data={"collection": "alice-private"},
                                   files={"files": ("x.md", b"# x\n\nx\n", "text/markdown")})
        assert refused.status_code in (403, 409), refused.text
    mine = await org.alice.post("/api/v1/search/semantic", json={
        "query": "PERIWINKLE", "mode": "keyword", "filters": {"source": "diary.md", "type": ["md"]}})
    assert [hit["source"] for hit in mine.json()["results"]] == ["diary.md"]
    # An org collection written only by its owner: members read it, cannot upload into it.
    shared = await org.alice.post("/api/v1/collections", json={"name": "alice-shared", "visibility": "org",
                                                               "writers": "owner"})
    assert shared.status_code == 201
    assert (await org.bob.get("/api/v1/collections/alice-shared")).json()["can_write"] is False
    refused = await org.bob.post("/api/v1/documents", data={"collection": "alice-shared"},
                                 files={"files": ("x.md", b"# x\n\nx\n", "text/markdown")})
    assert refused.status_code == 403
    assert (await org.bob.patch("/api/v1/collections/alice-shared", json={"writers": "readers"})).status_code == 403
    assert (await org.viewer.post("/api/v1/collections", json={"name": "viewer-made"})).status_code == 403
    # A division member cannot publish to the whole organisation.
    assert (await org.d1.post("/api/v1/collections", json={"name": "d1-wide", "visibility": "org"})).status_code == 403


async def test_a_collection_made_private_or_deleted_is_out_of_reach_at_once(org: Org) -> None:
    """Who may read which collection is kept in memory (no query per question); a change takes effect on
    the very next request, not when that memory expires."""
    assert (await org.alice.post("/api/v1/collections", json={"name": "notes", "visibility": "org"})).status_code == 201
    await wait_job(org.alice, (await upload(org.alice, {"n.md": "# Notes\n\nThe password hint is TANGERINE.\n"},
                                            collection="notes"))["job_id"])

    async def bob_finds() -> bool:
        found = await org.bob.post("/api/v1/search/semantic", json={"query": "TANGERINE hint", "mode": "keyword"})
        return any("TANGERINE" in hit["text"] for hit in found.json()["results"])

    assert await bob_finds() and "TANGERINE" in (await _ask(org.bob, "What is the password hint?")).text
    changed = await org.alice.patch("/api/v1/collections/notes", json={"visibility": "private"})
    assert changed.status_code == 200, changed.text
    assert not await bob_finds()
    assert "TANGERINE" not in (await _ask(org.bob, "What is the password hint?")).text
    named = await org.bob.post("/api/v1/search/semantic", json={"query": "hint", "collection": "notes"})
    assert named.status_code == 404
    assert (await org.alice.patch("/api/v1/collections/notes", json={"visibility": "org"})).status_code == 200
    assert await bob_finds()
    assert (await org.alice.delete("/api/v1/collections/notes")).status_code == 204
    assert (await org.bob.post("/api/v1/search/semantic",
                               json={"query": "hint", "collection": "notes"})).status_code == 404
    # a collection made after the last read is found when named
    assert (await org.bob.post("/api/v1/collections", json={"name": "fresh"})).status_code == 201
    assert (await org.bob.post("/api/v1/search/semantic",
                               json={"query": "hint", "collection": "fresh"})).status_code == 200


async def test_admins_list_and_erase_conversations_without_reading_them(org: Org) -> None:
    alices = (await _ask(org.alice, "private matter")).json()["conversation_id"]
    d1s = (await _ask(org.d1, "division matter")).json()["conversation_id"]
    listed = (await org.owner.get("/api/v1/admin/conversations")).json()["conversations"]
    assert {alices, d1s} <= {row["id"] for row in listed}
    assert all("title" not in row for row in listed)
    division_view = {row["id"] for row in
                     (await org.d1_admin.get("/api/v1/admin/conversations")).json()["conversations"]}
    assert d1s in division_view and alices not in division_view
    assert (await org.d1_admin.delete(f"/api/v1/admin/conversations/{alices}")).status_code == 404
    assert (await org.alice.get("/api/v1/admin/conversations")).status_code == 403
    assert (await org.owner.get(f"/api/v1/conversations/{alices}/messages")).status_code == 404
    assert (await org.owner.delete(f"/api/v1/admin/conversations/{alices}")).status_code == 204
    assert (await org.alice.get(f"/api/v1/conversations/{alices}")).status_code == 404
    assert await _message_count(org.app, alices) == 0
    erased = await audit_rows(org.app, "conversation.erase")
    assert [row.target_id for row in erased] == [alices]
    assert erased[0].details is not None and erased[0].details["owner_user_id"] == org.ids["alice"]


async def test_a_user_exports_and_erases_their_data(org: Org) -> None:
    asked = await _ask(org.alice, "Remember my cat is called Mittens.")
    conversation = asked.json()["conversation_id"]
    await org.alice.post("/api/v1/query", json={"question": "Where is the cafeteria?"})
    queued = await upload(org.alice, {"cats.md": "# Cats\n\nMittens likes tuna and naps at noon.\n"},
                          collection="alice-cats")
    await wait_job(org.alice, queued["job_id"])
    thread = (await org.alice.post("/threads", json={})).json()["thread_id"]
    ran = await org.alice.post(f"/threads/{thread}/runs/wait", json={
        "assistant_id": "echo", "input": {"messages": [{"role": "user", "content": "Mittens says hi"}]}})
    assert ran.status_code == 200, ran.text
    checkpoint = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    async with org.app.services.agents.checkpoints.for_tenant("any") as saver:
        assert await saver.aget_tuple(checkpoint) is not None
    exported = await org.alice.get("/api/v1/me/export")
    assert exported.status_code == 200
    body = exported.json()
    assert body["user"]["email"] == "alice@example.com"
    assert [c["id"] for c in body["conversations"]] == [conversation]
    assert any("Mittens" in m["content"] for m in body["conversations"][0]["messages"])
    assert len(body["queries"]) == 1 and "Mittens likes tuna" in body["documents"][0]["text"]
    assert (await org.keyless.get("/api/v1/me/export")).status_code == 403
    # Erasing needs the user's own login, and removes every row and vector the user owned.
    document_id = body["documents"][0]["id"]
    async with org.app.services.db.system_session() as session:
        chunk_ids = list(await session.scalars(select(Chunk.id).where(Chunk.document_id == document_id)))
    assert chunk_ids and set(chunk_ids) <= await org.app.services.index.ids(_org_of(body), "alice-cats")
    erased = await org.alice.delete("/api/v1/me")
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased"]["documents"] == 1 and erased.json()["erased"]["conversations"] == 1
    assert erased.json()["erased"]["agent_threads"] == 1
    async with org.app.services.agents.checkpoints.for_tenant("any") as saver:  # the thread's state went too
        assert await saver.aget_tuple(checkpoint) is None
    async with org.app.services.db.system_session() as session:
        assert await session.get(User, org.ids["alice"]) is None
        for model in (Conversation, QueryRecord, Document, AgentThread):
            assert not (await session.scalars(select(model.id).where(model.user_id == org.ids["alice"]))).all()
        assert not (await session.scalars(select(Chunk.id).where(Chunk.id.in_(chunk_ids)))).all()
        assert not (await session.scalars(select(UsageRecord.id).where(
            UsageRecord.user_id == org.ids["alice"]))).all()
    assert not set(chunk_ids) & await org.app.services.index.ids(_org_of(body), "alice-cats")
    assert [row.target_id for row in await audit_rows(org.app, "user.erase")] == [org.ids["alice"]]
    assert (await org.alice.get("/api/v1/conversations")).status_code == 401


def _org_of(export: dict[str, object]) -> str:
    user = export["user"]
    assert isinstance(user, dict)
    return str(user["home_org_id"])


async def test_the_last_owner_cannot_erase_their_account(org: Org) -> None:
    users = (await org.owner.get("/api/v1/admin/users?limit=200")).json()["users"]
    bootstrap = next(user for user in users if user["email"] == "admin@localhost")
    reset = await org.owner.patch(f"/api/v1/admin/users/{bootstrap['id']}", json={"password": PASSWORD})
    assert reset.status_code == 200, reset.text
    token = (await login(org.owner, "admin@localhost", PASSWORD)).json()["access_token"]
    async with _client(org.app, token) as last_owner:
        refused = await last_owner.delete("/api/v1/me")
        assert refused.status_code == 409, refused.text
        # With an API key (not the user's own login) erasing is refused outright.
        assert (await org.owner.delete("/api/v1/me")).status_code == 403
        owner_id, owner_token = await _user(org.app, "second-owner@example.com", "owner")
        async with _client(org.app, owner_token) as second:
            assert (await second.delete("/api/v1/me")).status_code == 200  # another owner remains
        async with org.app.services.db.system_session() as session:
            assert await session.get(User, owner_id) is None
        assert (await last_owner.delete("/api/v1/me")).status_code == 409
