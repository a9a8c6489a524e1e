"""Job completion webhooks, end to end: an admin registers a webhook through the API, a job ends, and a real
HTTP receiver on loopback gets the event, whose signature is checked with the ``standardwebhooks``
library's own ``verify`` (a wrong secret fails it). Retries and backoff, failures recorded, a slow receiver
never holding up jobs, tenant isolation (organisation A's webhook never gets B's job), the URL checks, and
the secret shown once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from atrium.accounts.ownership import Owner
from atrium.store.models import Job
from tests.api.helpers import upload, wait_job
from tests.conftest import RunningApp, make_settings, run_app
from tests.tenancy_helpers import create_tenant
from tests.webhook_receiver import Received, WebhookReceiver

FAST = {"allow_http": True, "allow_private": True, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}
DOC = {"notes.md": "# Notes\n\nThe heron nests by the river in spring.\n"}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as made:
        yield made


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", webhooks=FAST, jobs={"max_attempts": 1})
    async with run_app(settings) as running:
        yield running


async def register(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    made = await client.post("/api/v1/webhooks", json={"url": url, **body})
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def verified(item: Received, secret: str) -> dict[str, Any]:
    """The delivery's payload, after the library checked its signature against ``secret``."""
    payload: dict[str, Any] = Verifier(secret).verify(item.body, item.headers)
    return payload


async def test_a_job_end_reaches_the_webhook_signed(app: RunningApp, receiver: WebhookReceiver) -> None:
    hook = await register(app.client, f"{receiver.url}/a", description="ingestion results")
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.succeeded", "job.failed", "job.cancelled"]
    job = await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
    assert job["status"] == "succeeded"
    [delivery] = await receiver.wait_for("a")
    payload = verified(delivery, hook["secret"])
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["job"]["id"] == job["id"] and payload["data"]["job"]["kind"] == "ingest"
    assert payload["data"]["job"]["result"]["documents"][0]["source"] == "notes.md"
    assert delivery.headers["webhook-id"] == f"msg_{job['id']}_succeeded"
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    assert delivery.headers["content-type"] == "application/json"
    # The same delivery does not verify under another secret, nor with its body changed.
    other = await register(app.client, f"{receiver.url}/unused")
    with pytest.raises(WebhookVerificationError):
        verified(delivery, other["secret"])
    tampered = Received(delivery.path, delivery.headers, delivery.body.replace(b"succeeded", b"failed"), delivery.at)
    with pytest.raises(WebhookVerificationError):
        verified(tampered, hook["secret"])
    listed = (await app.client.get("/api/v1/webhooks")).json()["webhooks"]
    mine = next(item for item in listed if item["id"] == hook["id"])
    assert mine["last_status"] == "delivered" and mine["last_http_status"] == 200 and mine["failures"] == 0
    assert "secret" not in mine and hook["secret"] not in json.dumps(listed)  # shown once, when made


async def test_only_the_subscribed_events_are_sent(app: RunningApp, receiver: WebhookReceiver) -> None:
    failures = await register(app.client, f"{receiver.url}/failures", events=["job.failed"])
    everything = await register(app.client, f"{receiver.url}/all")
    done = await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
    [first] = await receiver.wait_for("all")
    assert verified(first, everything["secret"])["data"]["job"]["id"] == done["id"]
    # A job that fails for good (its payload names no folder: the handler raises; one attempt allowed).
    async with app.services.db.system_session() as session:
        row = await session.get(Job, done["id"])
        assert row is not None
        org_id, owner = row.org_id, Owner(row.user_id, row.api_key_id)
    failed_id = await app.services.jobs.enqueue(org_id, "ingest", {"collection": "docs", "files": []}, owner=owner)
    failed = await wait_job(app.client, failed_id)
    assert failed["status"] == "failed"
    [only] = await receiver.wait_for("failures")
    payload = verified(only, failures["secret"])
    assert payload["type"] == "job.failed" and payload["data"]["job"]["id"] == failed_id
    assert payload["data"]["job"]["error"]
    await receiver.wait_for("all", 2)
    assert [verified(item, everything["secret"])["type"] for item in receiver.at("all")] == \
        ["job.succeeded", "job.failed"]
    assert len(receiver.at("failures")) == 1


async def test_a_cancelled_job_is_reported(tmp_path: Path, receiver: WebhookReceiver) -> None:
    # No worker in this process: the job stays queued until it is cancelled.
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", webhooks=FAST, jobs={"run_in_api": False})
    async with run_app(settings) as app:
        hook = await register(app.client, f"{receiver.url}/c", events=["job.cancelled"])
        job_id = (await upload(app.client, DOC))["job_id"]
        cancelled = await app.client.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        [delivery] = await receiver.wait_for("c")
        payload = verified(delivery, hook["secret"])
        assert payload["type"] == "job.cancelled" and payload["data"]["job"]["id"] == job_id


async def test_retries_with_backoff_then_delivered(app: RunningApp, receiver: WebhookReceiver) -> None:
    hook = await register(app.client, f"{receiver.url}/flaky")
    receiver.answer("flaky", 503, times=2)
    await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
    tries = await receiver.wait_for("flaky", 3)
    assert len({item.headers["webhook-id"] for item in tries}) == 1  # one message, tried three times
    for item in tries:
        verified(item, hook["secret"])  # each try signed afresh
    assert tries[1].at - tries[0].at >= 0.005 and tries[2].at - tries[1].at >= 0.005
    await _settled(app, hook["id"], "delivered")


async def test_a_refused_delivery_is_recorded_and_not_retried(app: RunningApp, receiver: WebhookReceiver) -> None:
    hook = await register(app.client, f"{receiver.url}/gone")
    receiver.answer("gone", 410, times=5)
    await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
    await receiver.wait_for("gone")
    view = await _settled(app, hook["id"], "failed")
    assert view["last_http_status"] == 410 and view["failures"] == 1 and "410" in view["last_error"]
    await asyncio.sleep(0.3)
    assert len(receiver.at("gone")) == 1


async def test_giving_up_after_the_last_try_is_recorded(tmp_path: Path, receiver: WebhookReceiver) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", webhooks={**FAST, "max_attempts": 3})
    async with run_app(settings) as app:
        hook = await register(app.client, f"{receiver.url}/down")
        receiver.answer("down", 500, times=10)
        await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
        await receiver.wait_for("down", 3)
        view = await _settled(app, hook["id"], "failed")
        assert view["last_http_status"] == 500 and view["failures"] == 1
        await asyncio.sleep(0.3)
        assert len(receiver.at("down")) == 3


async def test_a_slow_receiver_never_holds_up_jobs(app: RunningApp, receiver: WebhookReceiver) -> None:
    await register(app.client, f"{receiver.url}/slow")
    receiver.answer("slow", 200, delay_s=3.0, times=5)
    started = time.monotonic()
    first = await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
    second = await wait_job(app.client, (await upload(app.client, {"other.md": "# Other\n\nKingfishers."}))["job_id"])
    assert first["status"] == second["status"] == "succeeded"
    assert time.monotonic() - started < 2.5  # both jobs ended while the first delivery was still waiting
    await receiver.wait_for("slow", 2)


async def test_an_organisations_webhook_never_gets_another_organisations_jobs(
        app: RunningApp, receiver: WebhookReceiver) -> None:
    other = await create_tenant(app.services.db, "Bravo")
    async with httpx.AsyncClient(transport=app.client._transport, base_url="http://atrium.test",
                                 headers={"Authorization": f"Bearer {other.raw_key}"}) as bravo:
        hook_a = await register(app.client, f"{receiver.url}/alpha")
        hook_b = await register(bravo, f"{receiver.url}/bravo")
        assert [h["id"] for h in (await bravo.get("/api/v1/webhooks")).json()["webhooks"]] == [hook_b["id"]]
        assert (await bravo.delete(f"/api/v1/webhooks/{hook_a['id']}")).status_code == 404
        job_a = await wait_job(app.client, (await upload(app.client, DOC))["job_id"])
        job_b = await wait_job(bravo, (await upload(bravo, {"b.md": "# B\n\nBravo's own notes."}))["job_id"])
        [alpha] = await receiver.wait_for("alpha")
        [bravo_got] = await receiver.wait_for("bravo")
        await asyncio.sleep(0.3)
    assert verified(alpha, hook_a["secret"])["data"]["job"]["id"] == job_a["id"]
    assert verified(bravo_got, hook_b["secret"])["data"]["job"]["id"] == job_b["id"]
    assert len(receiver.at("alpha")) == len(receiver.at("bravo")) == 1


async def test_urls_are_checked_when_registered(tmp_path: Path) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data")  # the defaults: https, public hosts only
    async with run_app(settings) as app:
        plain = await app.client.post("/api/v1/webhooks", json={"url": "http://hooks.example.com/x"})
        assert plain.status_code == 422 and "https" in plain.json()["error"]["message"]
        loopback = await app.client.post("/api/v1/webhooks", json={"url": "https://127.0.0.1/hook"})
        assert loopback.status_code == 422 and loopback.json()["error"]["code"] == "invalid_request"
        metadata = await app.client.post("/api/v1/webhooks", json={"url": "https://169.254.169.254/latest"})
        assert metadata.status_code == 422
        creds = await app.client.post("/api/v1/webhooks", json={"url": "https://user:pw@hooks.example.com/x"})
        assert creds.status_code == 422
        unknown = await app.client.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/x",
                                                                   "events": ["job.exploded"]})
        assert unknown.status_code == 422
        assert (await app.client.get("/api/v1/webhooks")).json()["webhooks"] == []


async def test_the_limit_per_organisation_and_removal(tmp_path: Path, receiver: WebhookReceiver) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", webhooks={**FAST, "max_per_org": 2})
    async with run_app(settings) as app:
        first = await register(app.client, f"{receiver.url}/1")
        await register(app.client, f"{receiver.url}/2")
        over = await app.client.post("/api/v1/webhooks", json={"url": f"{receiver.url}/3"})
        assert over.status_code == 409 and over.json()["error"]["code"] == "conflict"
        assert (await app.client.delete(f"/api/v1/webhooks/{first['id']}")).status_code == 204
        assert (await app.client.delete(f"/api/v1/webhooks/{first['id']}")).status_code == 404
        await register(app.client, f"{receiver.url}/3")
        audit = (await app.client.get("/api/v1/admin/audit")).json()
        actions = [event["action"] for event in audit.get("events", audit.get("items", []))]
        assert "webhook.create" in actions and "webhook.delete" in actions
        assert first["secret"] not in json.dumps(audit)


async def _settled(app: RunningApp, webhook_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        listed = (await app.client.get("/api/v1/webhooks")).json()["webhooks"]
        view = next(item for item in listed if item["id"] == webhook_id)
        if view["last_status"] == status:
            return view  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.05)
