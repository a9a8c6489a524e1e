"""Upload -> job -> search; documents list/get/delete; tenant scoping of knowledge."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from atrium.accounts.api_keys import create_key
from atrium.store.models import Organization
from tests.api.helpers import ingest, upload, wait_job
from tests.conftest import RunningApp


async def other_tenant_client(running: RunningApp) -> httpx.AsyncClient:
    async with running.services.db.system_session() as session:
        org = Organization(name="Other")
        session.add(org)
        await session.flush()
        _, raw = await create_key(session, org_id=org.id, user_id=None, role="owner", name="other")
    return httpx.AsyncClient(transport=running.client._transport, base_url="http://atrium.test",
                             headers={"Authorization": f"Bearer {raw}"})


async def search(client: httpx.AsyncClient, query: str, mode: str = "hybrid", **extra: object) -> list[dict]:
    response = await client.post("/api/v1/search/semantic", json={"query": query, "mode": mode, **extra})
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == mode
    return response.json()["results"]  # type: ignore[no-any-return]


async def test_upload_is_ingested_by_a_job_and_found_by_every_mode(running: RunningApp) -> None:
    job = await ingest(running.client)
    assert job["progress"] == 1.0
    assert job["result"]["counts"] == {"created": 3}
    for mode in ("hybrid", "vector", "keyword"):
        results = await search(running.client, "how long do refunds take", mode)
        assert results, mode
        assert results[0]["source"] == "billing.md", (mode, results[0])
        assert "Refunds" in results[0]["heading"]
        assert set(results[0]) >= {"chunk_id", "document_id", "source", "title", "heading", "text", "score"}


async def test_reingesting_unchanged_files_changes_nothing_and_changed_files_replace(running: RunningApp) -> None:
    await ingest(running.client)
    again = await ingest(running.client)
    assert again["result"]["counts"] == {"unchanged": 3}
    changed = await ingest(running.client, {"pets.txt": "Caring for parrots: parrots need toys and company."})
    assert changed["result"]["counts"] == {"replaced": 1}
    assert not await search(running.client, "cats sleep sixteen hours", "keyword")
    assert (await search(running.client, "parrots toys", "keyword"))[0]["source"] == "pets.txt"
    docs = (await running.client.get("/api/v1/documents")).json()["documents"]
    assert sorted(d["source"] for d in docs) == ["billing.md", "deploy.md", "pets.txt"]


async def test_collection_filter(running: RunningApp) -> None:
    await ingest(running.client, collection="docs")
    await ingest(running.client, {"faq.md": "# FAQ\n\nRefunds for gift cards are not possible."}, collection="faq")
    only_faq = await search(running.client, "refunds", "hybrid", collection="faq")
    assert only_faq and {r["collection"] for r in only_faq} == {"faq"}
    both = await search(running.client, "refunds", "hybrid", limit=10)
    assert {r["collection"] for r in both} == {"docs", "faq"}


async def test_delete_document_removes_it_from_search_and_listing(running: RunningApp) -> None:
    await ingest(running.client)
    docs = (await running.client.get("/api/v1/documents", params={"collection": "docs"})).json()["documents"]
    billing = next(d for d in docs if d["source"] == "billing.md")
    assert (await running.client.get(f"/api/v1/documents/{billing['id']}")).json()["chunks"] >= 1
    assert (await running.client.delete(f"/api/v1/documents/{billing['id']}")).status_code == 204
    assert (await running.client.get(f"/api/v1/documents/{billing['id']}")).status_code == 404
    for mode in ("hybrid", "vector", "keyword"):
        assert all(r["source"] != "billing.md" for r in await search(running.client, "refunds", mode)), mode


async def test_other_tenants_see_nothing(running: RunningApp) -> None:
    job = await upload(running.client, {"secret.md": "# Plans\n\nProject Nightingale launches in March."})
    await wait_job(running.client, job["job_id"])
    other = await other_tenant_client(running)
    for mode in ("hybrid", "vector", "keyword"):
        assert await search(other, "Project Nightingale launches", mode) == []
    assert (await other.get("/api/v1/documents")).json()["documents"] == []
    assert (await other.get(f"/api/v1/jobs/{job['job_id']}")).status_code == 404
    doc_id = (await running.client.get("/api/v1/documents")).json()["documents"][0]["id"]
    assert (await other.get(f"/api/v1/documents/{doc_id}")).status_code == 404
    assert (await other.delete(f"/api/v1/documents/{doc_id}")).status_code == 404
    assert (await running.client.get(f"/api/v1/documents/{doc_id}")).status_code == 200
    async with running.services.db.system_session() as session:
        assert len((await session.scalars(select(Organization))).all()) == 2


async def test_an_upload_retried_with_its_idempotency_key_is_ingested_once(running: RunningApp) -> None:
    """A client that lost the 202 sends the upload again with the same ``Idempotency-Key``: it gets the first
    upload's job, nothing more is saved or queued, one document results. The same key from another caller
    of the organisation is that caller's own upload."""
    client = running.client
    body = [("files", ("plans.md", b"# Plans\n\nProject Heron ships in May.", "text/plain"))]
    first = await client.post("/api/v1/documents", data={"collection": "docs"}, files=body,
                              headers={"Idempotency-Key": "upload-7"})
    again = await client.post("/api/v1/documents", data={"collection": "docs"}, files=body,
                              headers={"Idempotency-Key": "upload-7"})
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json() and first.json()["files"] == ["plans.md"]
    uploads = running.services.settings.uploads_dir
    folders = await asyncio.to_thread(lambda: [path for path in uploads.glob("*/*") if path.is_dir()])
    assert len(folders) <= 1  # the retry saved nothing (the job may already have removed the first)
    await wait_job(client, first.json()["job_id"])
    assert [d["source"] for d in (await client.get("/api/v1/documents")).json()["documents"]] == ["plans.md"]
    async with running.services.db.system_session() as session:
        org_id = await session.scalar(select(Organization.id))
        assert org_id is not None
        _, raw = await create_key(session, org_id=org_id, user_id=None, role="member", name="service")
    async with httpx.AsyncClient(transport=client._transport, base_url="http://atrium.test",
                                 headers={"Authorization": f"Bearer {raw}"}) as service:
        theirs = await service.post("/api/v1/documents", data={"collection": "service-docs"}, files=body,
                                    headers={"Idempotency-Key": "upload-7"})
        assert theirs.status_code == 202 and theirs.json()["job_id"] != first.json()["job_id"], theirs.text
    bad = await client.post("/api/v1/documents", files=body, headers={"Idempotency-Key": "k" * 101})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


async def test_first_uploads_at_once_into_a_new_collection_all_succeed(running: RunningApp) -> None:
    """Several first uploads into a collection that does not exist yet race to make it: one makes it, the
    others upload into it (found by the soak test: they got 409 conflict)."""
    client = running.client

    async def first_upload(number: int) -> httpx.Response:
        return await client.post("/api/v1/documents", data={"collection": "fresh"},
                                 files=[("files", (f"note-{number}.md", f"# Note {number}\n\nword{number}\n".encode(),
                                                   "text/plain"))])

    responses = await asyncio.gather(*(first_upload(number) for number in range(6)))
    assert [response.status_code for response in responses] == [202] * 6, [r.text for r in responses]
    for response in responses:
        await wait_job(client, response.json()["job_id"])
    collections = (await client.get("/api/v1/collections")).json()["collections"]
    assert [row["name"] for row in collections].count("fresh") == 1
    listed = (await client.get("/api/v1/documents?collection=fresh")).json()["documents"]
    assert sorted(row["source"] for row in listed) == [f"note-{number}.md" for number in range(6)]
