"""One contract for the Notifier port, over both adapters (Web Push, FCM), each talking real HTTP to a local
service that speaks its wire format (``tests/push_servers.py``).

What is checked: a notification reaches the device with its title, body and string data intact; a device
the service no longer knows is ``gone`` (not retried); a throttled send is retried and then delivered;
out of attempts, the outcome says so (``throttled``) instead of raising."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from atrium.gateway.http_client import upstream_http_client
from atrium.notifications.delivery import EndpointPolicy, Retrier
from atrium.notifications.fcm import AccessTokens, FcmNotifier, ServiceAccount
from atrium.notifications.ports import Device, Notification, Notifier
from atrium.notifications.webpush import VapidKeys, WebPushNotifier
from tests.push_servers import FcmService, WebPushService

NOTE = Notification(title="Input needed", body="Which plan do you want?", data={"flow_id": "f-1", "step": "2"})


@dataclass
class Rig:
    """An adapter, a way to make a device its service knows, and what the service received."""

    notifier: Notifier
    new_device: Callable[[], Device]
    received: Callable[[], list[dict[str, Any]]]  # title, body and data of each message, in order
    throttle: Callable[[Device, int], None]  # the next n sends to the device get 429
    forget: Callable[[Device], object]  # the service answers that the device is gone


async def web_push_rig(client: httpx.AsyncClient, service: WebPushService, tmp_path: Path, attempts: int) -> Rig:
    keys = VapidKeys.load(None, tmp_path / "vapid.pem", "https://atrium.example/contact")
    notifier = WebPushNotifier(client, keys, EndpointPolicy(allow_http=True, allow_private=True),
                               Retrier(attempts, initial_s=0.01, max_retry_after_s=5), ttl_s=60, timeout_s=5)

    def new_device() -> Device:
        sub = service.subscribe()
        return Device(id=sub.id, kind="webpush", endpoint=sub.endpoint, p256dh=sub.p256dh, auth=sub.auth)

    return Rig(notifier, new_device, lambda: [m.payload for m in service.messages],
               lambda device, n: service.inject(device.id, 429, {"Retry-After": "0"}, times=n),
               lambda device: service.subscriptions.pop(device.id, None) and None)


async def fcm_rig(client: httpx.AsyncClient, service: FcmService, tmp_path: Path, attempts: int) -> Rig:
    account = ServiceAccount.from_file(service.service_account(tmp_path / "sa.json"))
    notifier = FcmNotifier(client, account, AccessTokens(client, account, timeout_s=5),
                           Retrier(attempts, initial_s=0.01, max_retry_after_s=5), base_url=service.url, ttl_s=60,
                           timeout_s=5)
    return Rig(notifier, lambda: Device(id="d", kind="fcm", endpoint=service.register()),
               lambda: [{**m.message["notification"], "data": m.message["data"]} for m in service.messages],
               lambda device, n: service.inject(device.endpoint, 429, {"Retry-After": "0"},
                                                FcmService.error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), times=n),
               lambda device: service.registered.discard(device.endpoint))


@pytest.fixture(params=["webpush", "fcm"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    client = upstream_http_client(httpx.Timeout(10.0))
    service: WebPushService | FcmService = WebPushService() if request.param == "webpush" else FcmService()
    async with service:
        if isinstance(service, WebPushService):
            yield await web_push_rig(client, service, tmp_path, attempts=3)
        else:
            yield await fcm_rig(client, service, tmp_path, attempts=3)
        assert service.problems == []
    await client.aclose()


async def test_delivers_title_body_and_data(rig: Rig) -> None:
    outcome = await rig.notifier.send(rig.new_device(), NOTE)
    assert outcome.status == "delivered" and outcome.attempts == 1
    [message] = rig.received()
    assert (message["title"], message["body"], message["data"]) == (NOTE.title, NOTE.body, NOTE.data)


async def test_a_forgotten_device_is_gone(rig: Rig) -> None:
    device = rig.new_device()
    rig.forget(device)
    outcome = await rig.notifier.send(device, NOTE)
    assert outcome.status == "gone" and outcome.attempts == 1 and rig.received() == []


async def test_throttled_sends_are_retried(rig: Rig) -> None:
    device = rig.new_device()
    rig.throttle(device, 2)
    outcome = await rig.notifier.send(device, NOTE)
    assert outcome.status == "delivered" and outcome.attempts == 3 and len(rig.received()) == 1
    rig.throttle(device, 3)
    outcome = await rig.notifier.send(device, NOTE)
    assert outcome.status == "throttled" and outcome.http_status == 429 and outcome.attempts == 3
    assert len(rig.received()) == 1
