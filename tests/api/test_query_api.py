"""One-shot query records."""

from __future__ import annotations

from tests.api.helpers import ingest
from tests.api.test_knowledge_api import other_tenant_client
from tests.conftest import RunningApp


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
