"""Small helpers for API tests (real HTTP semantics through the ASGI app)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

DOCS = {
    "billing.md": "# Billing\n\n## Refunds\n\nRefunds are issued within 14 days of a purchase. Contact the billing "
                  "team at the finance desk to request a refund.\n\n## Invoices\n\nInvoices are emailed on the "
                  "first day of every month.\n",
    "deploy.md": "# Deployment\n\n## Kubernetes\n\nThe helm chart deploys three replicas behind an ingress. "
                 "Rolling upgrades keep one replica serving at all times.\n",
    "pets.txt": "Caring for cats: cats sleep up to sixteen hours a day and need fresh water daily.\n",
}


async def upload(client: httpx.AsyncClient, files: dict[str, str], collection: str = "docs") -> dict[str, Any]:
    response = await client.post("/api/v1/documents", data={"collection": collection},
                                 files=[("files", (name, body.encode(), "text/plain")) for name, body in files.items()])
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed"):
            return job  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, f"job still {job['status']}"
        await asyncio.sleep(0.05)


async def ingest(client: httpx.AsyncClient, files: dict[str, str] = DOCS, collection: str = "docs") -> dict[str, Any]:
    job = await wait_job(client, (await upload(client, files, collection))["job_id"])
    assert job["status"] == "succeeded", job
    return job


def parse_sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if name and data:
            events.append((name, json.loads("\n".join(data))))
    return events
