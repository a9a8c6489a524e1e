"""One-shot query records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from atrium.store.models import QueryRecord
from tests.api.authz_helpers import client_for
from tests.api.helpers import ingest
from tests.api.test_knowledge_api import other_tenant_client
from tests.conftest import RunningApp, make_settings, run_app


async def test_query_is_stored_with_its_answer_and_readable_by_id(running: RunningApp) -> None:
    await ingest(running.client)
    created = await running.client.post("/api/v1/query", json={"question": "When are invoices emailed?"})
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["status"] == "complete"
    assert "first day" in record["answer"]
    assert record["sources"][0]["source"] == "billing.md" and record["sources"][0]["cited"]
    assert record["model"] == "fake" and record["usage"]["total_tokens"] > 0
    fetched = (await running.client.get(f"/api/v1/query/{record['id']}")).json()
    assert fetched == record
    other = await other_tenant_client(running)
    assert (await other.get(f"/api/v1/query/{record['id']}")).status_code == 404


async def test_query_without_waiting_is_pending_then_complete(running: RunningApp) -> None:
    await ingest(running.client)
    created = await running.client.post("/api/v1/query", json={"question": "refunds?", "wait": False})
    assert created.status_code in (201, 202)
    record_id = created.json()["id"]
    for task in list(running.services.runs._tasks):
        await task
    assert (await running.client.get(f"/api/v1/query/{record_id}")).json()["status"] == "complete"
    assert (await running.client.get("/api/v1/query/unknown")).status_code == 404


# --- The first front ends' request: {"query", "model", "user_id"?} ------------------------------------------

async def _member(running: RunningApp, name: str) -> tuple[str, httpx.AsyncClient]:
    """A new member of the admin's organisation and a client with its own key."""
    made = await running.client.post("/api/v1/admin/users", json={
        "email": f"{name}@example.com", "name": name, "role": "member"})
    assert made.status_code == 201, made.text
    key = await running.client.post("/api/v1/admin/keys", json={"name": name, "user_id": made.json()["id"]})
    assert key.status_code == 201, key.text
    return made.json()["id"], client_for(running.app, key.json()["key"])


async def _records(running: RunningApp) -> int:
    async with running.services.db.system_session() as session:
        return int(await session.scalar(select(func.count()).select_from(QueryRecord)) or 0)


async def test_the_first_front_ends_request_is_answered_with_their_fields(running: RunningApp) -> None:
    await ingest(running.client)
    user_id, client = await _member(running, "ada")
    try:
        for body in ({"query": "When are invoices emailed?", "model": "fake"},
                     {"query": "When are invoices emailed?", "model": "fake", "user_id": user_id}):
            created = await client.post("/api/v1/query", json=body)
            assert created.status_code == 201, created.text
            record = created.json()
            assert record["query_id"] == record["id"] and record["response"] == record["answer"]
            assert "first day" in record["response"] and record["question"] == body["query"]
            assert record["status"] == "complete" and record["model"] == "fake" and record["sources"]
            fetched = (await client.get(f"/api/v1/query/{record['query_id']}")).json()
            assert fetched == record
    finally:
        await client.aclose()


async def test_user_id_cannot_make_the_caller_act_as_another_user(running: RunningApp) -> None:
    await ingest(running.client)
    ada, ada_client = await _member(running, "ada")
    bob, bob_client = await _member(running, "bob")
    before = await _records(running)
    try:
        refused = await ada_client.post("/api/v1/query", json={"query": "refunds?", "model": "fake", "user_id": bob})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "user_mismatch"
        # The admin may not either (no delegation), nor a credential of no user.
        as_admin = await running.client.post("/api/v1/query", json={"query": "refunds?", "user_id": ada})
        assert as_admin.status_code == 403 and as_admin.json()["error"]["code"] == "user_mismatch"
        assert await _records(running) == before  # nothing stored, no model called
        assert (await bob_client.get("/api/v1/conversations")).status_code == 200
    finally:
        await ada_client.aclose()
        await bob_client.aclose()


@pytest.mark.parametrize("body, status, code", [
    ({"query": "refunds?", "model": "no-such-model"}, 404, "model_not_found"),
    ({"query": "refunds?", "question": "refunds?"}, 422, "invalid_request"),
    ({"model": "fake"}, 422, "invalid_request"),
    ({"query": "", "model": "fake"}, 422, "invalid_request"),
    ({"query": "refunds?", "model": "x" * 201}, 422, "invalid_request"),
])
async def test_malformed_first_front_end_requests_are_typed_errors(running: RunningApp, body: dict[str, Any],
                                                                    status: int, code: str) -> None:
    before = await _records(running)
    answer = await running.client.post("/api/v1/query", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code and answer.json()["error"]["request_id"]
    assert await _records(running) == before


async def test_the_model_named_is_the_model_that_answers(tmp_path: Path) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", gateway={
        "providers": {"vault": {"kind": "fake", "fake_answer": "The vault model says invoices go out monthly."}},
        "models": {"vault-model": {"provider": "vault", "model": "fake"}}})
    async with run_app(settings) as running:
        await ingest(running.client)
        named = await running.client.post("/api/v1/query", json={"query": "When are invoices emailed?",
                                                                 "model": "vault-model"})
        assert named.status_code == 201, named.text
        assert named.json()["model"] == "vault-model" and "vault model says" in named.json()["response"]
        default = await running.client.post("/api/v1/query", json={"question": "When are invoices emailed?"})
        assert default.json()["model"] == "fake" and "vault" not in default.json()["response"]
