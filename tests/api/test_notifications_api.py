"""``/api/v1/notifications``: registering, listing and removing one's devices, and the pushes they get (an
upload's ingestion job finishing, a flow waiting) delivered over real HTTP to the local Web Push and FCM
services of ``tests/push_servers.py``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from atrium.accounts.ownership import Owner
from atrium.settings import Settings
from atrium.store.models import NotificationDevice, User
from tests.api.helpers import upload, wait_job
from tests.conftest import RunningApp, make_settings, run_app
from tests.push_servers import FcmService, WebPushService

PASSWORD = "notify-password-1"


@pytest.fixture
async def push() -> AsyncIterator[WebPushService]:
    async with WebPushService() as service:
        yield service


@pytest.fixture
async def fcm_service() -> AsyncIterator[FcmService]:
    async with FcmService() as service:
        yield service


async def settings_for(tmp_path: Path, fcm_service: FcmService | None, **extra: Any) -> Settings:
    """Settings with notifications on (and FCM, given its service); built in a thread (they touch files)."""
    def build() -> Settings:
        if fcm_service is None:
            return make_settings(tmp_path / "data")
        return make_settings(tmp_path / "data", notifications=notification_settings(tmp_path, fcm_service, **extra))

    return await asyncio.to_thread(build)


def notification_settings(tmp_path: Path, fcm_service: FcmService, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "allow_http_endpoints": True, "allow_private_endpoints": True,
            "fcm_service_account_file": str(fcm_service.service_account(tmp_path / "sa.json")),
            "fcm_base_url": fcm_service.url, "initial_backoff_s": 0.01, **extra}


@pytest.fixture
async def running(tmp_path: Path, fcm_service: FcmService) -> AsyncIterator[RunningApp]:
    async with run_app(await settings_for(tmp_path, fcm_service)) as app:
        yield app


async def member_client(running: RunningApp, email: str) -> httpx.AsyncClient:
    made = await running.client.post("/api/v1/admin/users", json={
        "email": email, "name": email, "role": "member", "password": PASSWORD})
    assert made.status_code == 201, made.text
    token = await running.client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD},
                                      headers={"Authorization": ""})
    assert token.status_code == 200, token.text
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=running.app), base_url="http://atrium.test",
                             headers={"Authorization": f"Bearer {token.json()['access_token']}"})


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_device_registration_list_and_removal(running: RunningApp, push: WebPushService,
                                                    fcm_service: FcmService) -> None:
    client = running.client
    subscription = push.subscribe()
    made = await client.post("/api/v1/notifications/devices", json={"kind": "webpush", **subscription.as_json(),
                                                                     "label": "Firefox"})
    assert made.status_code == 201, made.text
    device = made.json()
    assert device["kind"] == "webpush" and device["push_service"] == "127.0.0.1" and device["label"] == "Firefox"
    assert subscription.endpoint not in made.text  # the capability URL is never echoed
    again = await client.post("/api/v1/notifications/devices", json={"kind": "webpush", **subscription.as_json()})
    assert again.status_code == 200 and again.json()["id"] == device["id"]
    phone = await client.post("/api/v1/notifications/devices", json={"kind": "fcm", "token": fcm_service.register()})
    assert phone.status_code == 201, phone.text
    listed = (await client.get("/api/v1/notifications/devices")).json()["devices"]
    assert [d["id"] for d in listed] == [device["id"], phone.json()["id"]]
    assert (await client.delete(f"/api/v1/notifications/devices/{device['id']}")).status_code == 204
    assert (await client.delete(f"/api/v1/notifications/devices/{device['id']}")).status_code == 404
    assert [d["id"] for d in (await client.get("/api/v1/notifications/devices")).json()["devices"]] == [
        phone.json()["id"]]
    key = (await client.get("/api/v1/notifications/vapid-public-key")).json()["public_key"]
    assert len(key) == 87 and key.startswith("B")


@pytest.mark.parametrize("body,fragment", [
    ({"kind": "webpush", "endpoint": "https://push.example/x", "keys": {"p256dh": "A" * 87, "auth": "A" * 22}},
     "p256dh"),
    ({"kind": "webpush", "endpoint": "https://push.example/x", "keys": {"p256dh": "not base64!", "auth": "x"}}, ""),
    ({"kind": "webpush", "endpoint": "https://push.example/x"}, ""),
    ({"kind": "fcm", "token": "short"}, ""),
    ({"kind": "fcm", "token": "a" * 5000}, ""),
    ({"kind": "apns", "token": "a" * 64}, ""),
    ({"kind": "fcm", "token": "a" * 64, "extra": 1}, ""),
])
async def test_malformed_devices_are_refused(running: RunningApp, body: dict[str, Any], fragment: str) -> None:
    answer = await running.client.post("/api/v1/notifications/devices", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and fragment in answer.text


async def test_inner_and_plain_http_endpoints_are_refused_unless_allowed(
        tmp_path: Path, fcm_service: FcmService, push: WebPushService) -> None:
    settings = await settings_for(tmp_path, fcm_service, allow_http_endpoints=False, allow_private_endpoints=False)
    subscription = push.subscribe().as_json()
    async with run_app(settings) as running:
        for endpoint in (subscription["endpoint"], "https://127.0.0.1/push/1", "https://10.1.2.3/push/1",
                         "https://169.254.169.254/latest/meta-data"):
            answer = await running.client.post("/api/v1/notifications/devices", json={
                "kind": "webpush", **subscription, "endpoint": endpoint})
            assert answer.status_code == 422, (endpoint, answer.text)
        assert (await running.client.get("/api/v1/notifications/devices")).json()["devices"] == []


async def test_notifications_off_by_default(tmp_path: Path) -> None:
    async with run_app(await settings_for(tmp_path, None)) as running:
        for method, path in (("GET", "/api/v1/notifications/devices"),
                             ("GET", "/api/v1/notifications/vapid-public-key")):
            answer = await running.client.request(method, path)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        assert not await asyncio.to_thread((tmp_path / "data" / "notifications").exists)  # no key generated while off


async def test_devices_are_their_owners_alone(running: RunningApp, push: WebPushService) -> None:
    alice = await member_client(running, "alice@example.com")
    bob = await member_client(running, "bob@example.com")
    try:
        made = await alice.post("/api/v1/notifications/devices", json={"kind": "webpush",
                                                                       **push.subscribe().as_json()})
        assert made.status_code == 201
        assert (await bob.get("/api/v1/notifications/devices")).json()["devices"] == []
        assert (await running.client.get("/api/v1/notifications/devices")).json()["devices"] == []  # admin too
        assert (await bob.delete(f"/api/v1/notifications/devices/{made.json()['id']}")).status_code == 404
        assert len((await alice.get("/api/v1/notifications/devices")).json()["devices"]) == 1
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_a_finished_upload_is_pushed_to_its_owner_devices(
        running: RunningApp, push: WebPushService, fcm_service: FcmService) -> None:
    alice = await member_client(running, "alice@example.com")
    try:
        browser, gone, token = push.subscribe(), push.subscribe(), fcm_service.register()
        for body in ({"kind": "webpush", **browser.as_json()}, {"kind": "webpush", **gone.as_json()},
                     {"kind": "fcm", "token": token}):
            assert (await alice.post("/api/v1/notifications/devices", json=body)).status_code == 201
        assert (await running.client.post("/api/v1/notifications/devices", json={
            "kind": "webpush", **push.subscribe().as_json()})).status_code == 201  # the admin's: not notified
        push.inject(gone.id, 410)
        await alice.post("/api/v1/collections", json={"name": "mine", "visibility": "private"})
        job = await wait_job(alice, (await upload(alice, {"notes.md": "# Notes\n\nSome notes.\n"}, "mine"))["job_id"])
        assert job["status"] == "succeeded", job
        await wait_for(lambda: push.messages and fcm_service.messages)
        assert push.problems == [] and fcm_service.problems == []
        [web] = push.messages
        assert web.subscription == browser.id
        assert web.payload["data"] == {"type": "job", "job_id": job["id"], "status": "succeeded", "kind": "ingest"}
        assert web.payload["title"] == "Your documents are ready" and "1 document ingested" in web.payload["body"]
        [mobile] = fcm_service.messages
        assert mobile.token == token and mobile.message["data"]["job_id"] == job["id"]
        for _ in range(200):  # the sends end with the gone device deleted and the others marked delivered
            devices = (await alice.get("/api/v1/notifications/devices")).json()["devices"]
            if len(devices) == 2 and all(d["last_delivered_at"] for d in devices):
                break
            await asyncio.sleep(0.05)
        assert len(devices) == 2 and all(d["last_delivered_at"] for d in devices), devices
    finally:
        await alice.aclose()


async def test_flow_waiting_pushes_the_prompt_and_a_broken_device_breaks_nothing(
        running: RunningApp, push: WebPushService, caplog: pytest.LogCaptureFixture) -> None:
    services = running.services
    subscription = push.subscribe()
    assert (await running.client.post("/api/v1/notifications/devices", json={
        "kind": "webpush", **subscription.as_json()})).status_code == 201
    org_id = (await running.client.get("/api/v1/admin/org")).json()["id"]
    async with services.db.system_session() as session:
        user_id = await session.scalar(select(User.id).where(User.email == "admin@localhost"))
    push.inject(subscription.id, 500, times=10)
    with caplog.at_level(logging.WARNING):
        task = services.notifications.flow_waiting(org_id, Owner(user_id, None), "flow-1", "Which plan do you want?")
        assert task is not None
        await task
    assert push.messages == [] and "failed" in caplog.text and subscription.endpoint not in caplog.text
    push.queued[subscription.id].clear()
    task = services.notifications.flow_waiting(org_id, Owner(user_id, None), "flow-1", "Which plan do you want?")
    assert task is not None
    await task
    [message] = push.messages
    assert message.payload["body"] == "Which plan do you want?"
    assert message.payload["data"] == {"type": "flow_waiting", "flow_id": "flow-1"}
    assert message.headers["urgency"] == "high"


async def test_vapid_private_key_stays_in_the_data_dir(tmp_path: Path, fcm_service: FcmService,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    settings = await settings_for(tmp_path, fcm_service)
    with caplog.at_level(logging.DEBUG):
        async with run_app(settings) as running:
            first = (await running.client.get("/api/v1/notifications/vapid-public-key")).json()["public_key"]
    key_file = tmp_path / "data" / "notifications" / "vapid_private.pem"
    pem = await asyncio.to_thread(key_file.read_text)
    body = "".join(pem.strip().splitlines()[1:-1])
    mode = (await asyncio.to_thread(key_file.stat)).st_mode
    assert mode & 0o777 == 0o600 and body[:40] not in caplog.text and "generated a VAPID key pair" in caplog.text
    async with run_app(settings) as running:
        assert (await running.client.get("/api/v1/notifications/vapid-public-key")).json()["public_key"] == first


async def test_a_users_devices_are_in_their_export_and_go_with_their_erasure(
        running: RunningApp, push: WebPushService) -> None:
    alice = await member_client(running, "alice@example.com")
    try:
        made = await alice.post("/api/v1/notifications/devices", json={"kind": "webpush", **push.subscribe().as_json(),
                                                                       "label": "Phone"})
        assert made.status_code == 201
        export = (await alice.get("/api/v1/me/export")).json()
        assert [(d["id"], d["label"]) for d in export["notification_devices"]] == [(made.json()["id"], "Phone")]
        erased = await alice.delete("/api/v1/me")
        assert erased.status_code == 200 and erased.json()["erased"]["notification_devices"] == 1, erased.text
        async with running.services.db.system_session() as session:
            assert await session.get(NotificationDevice, made.json()["id"]) is None
    finally:
        await alice.aclose()


async def test_past_the_device_limit_the_oldest_goes(tmp_path: Path, fcm_service: FcmService) -> None:
    async with run_app(await settings_for(tmp_path, fcm_service, max_devices_per_owner=2)) as running:
        made = []
        for _ in range(3):
            answer = await running.client.post("/api/v1/notifications/devices",
                                               json={"kind": "fcm", "token": fcm_service.register()})
            assert answer.status_code == 201
            made.append(answer.json()["id"])
        listed = [d["id"] for d in (await running.client.get("/api/v1/notifications/devices")).json()["devices"]]
        assert listed == made[1:]
