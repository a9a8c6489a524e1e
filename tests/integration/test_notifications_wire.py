"""The Notifier adapters over real HTTP against local services that speak Web Push (RFC 8030/8291/8292) and
FCM HTTP v1 (``tests/push_servers.py``): what they send, and what they make of each service's errors."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from atrium.errors import InvalidRequest
from atrium.gateway.http_client import upstream_http_client
from atrium.guard.egress import EgressGuard, EgressSettings, IPAddress
from atrium.notifications.delivery import EndpointPolicy, Retrier
from atrium.notifications.fcm import AccessTokens, FcmNotifier, ServiceAccount
from atrium.notifications.ports import Device, Notification
from atrium.notifications.webpush import VapidKeys, WebPushNotifier
from tests.push_servers import FcmService, WebPushService

NOTE = Notification(title="Your documents are ready", body="2 documents ingested.",
                    data={"type": "job", "job_id": "j1"}, urgency="high")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    client = upstream_http_client(httpx.Timeout(10.0))
    yield client
    await client.aclose()


def retrier(attempts: int = 3) -> Retrier:
    return Retrier(attempts, initial_s=0.01, max_retry_after_s=5.0)


@pytest.fixture
async def push() -> AsyncIterator[WebPushService]:
    async with WebPushService() as service:
        yield service


@pytest.fixture
def vapid(tmp_path: Path) -> VapidKeys:
    return VapidKeys.load(None, tmp_path / "vapid.pem", "mailto:ops@atrium.example")


def webpush(client: httpx.AsyncClient, keys: VapidKeys, attempts: int = 3) -> WebPushNotifier:
    policy = EndpointPolicy(allow_http=True, allow_private=True)
    return WebPushNotifier(client, keys, policy, retrier(attempts), ttl_s=3600, timeout_s=5.0)


def device_of(subscription: object) -> Device:
    return Device(id="d1", kind="webpush", endpoint=subscription.endpoint,  # type: ignore[attr-defined]
                  p256dh=subscription.p256dh, auth=subscription.auth)  # type: ignore[attr-defined]


async def test_web_push_is_encrypted_signed_and_decrypted_by_the_service(
        push: WebPushService, client: httpx.AsyncClient, vapid: VapidKeys) -> None:
    subscription = push.subscribe()
    outcome = await webpush(client, vapid).send(device_of(subscription), NOTE)
    assert outcome.status == "delivered" and outcome.http_status == 201, outcome
    assert push.problems == []
    [message] = push.messages
    assert message.payload == {"title": NOTE.title, "body": NOTE.body, "data": NOTE.data}
    assert message.headers["ttl"] == "3600" and message.headers["urgency"] == "high"
    assert message.vapid_key == vapid.public_key
    assert message.vapid_claims["aud"] == push.url and message.vapid_claims["sub"] == "mailto:ops@atrium.example"


async def test_vapid_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = VapidKeys.load(None, tmp_path / "k.pem", "mailto:a@b.example")
    again = VapidKeys.load(None, tmp_path / "k.pem", "mailto:a@b.example")
    assert first.public_key == again.public_key
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("status", [404, 410])
async def test_web_push_gone_subscription(status: int, push: WebPushService, client: httpx.AsyncClient,
                                          vapid: VapidKeys) -> None:
    subscription = push.subscribe()
    push.inject(subscription.id, status)
    outcome = await webpush(client, vapid).send(device_of(subscription), NOTE)
    assert outcome.status == "gone" and outcome.http_status == status and outcome.attempts == 1


async def test_web_push_too_large(push: WebPushService, client: httpx.AsyncClient, vapid: VapidKeys) -> None:
    subscription = push.subscribe()
    push.inject(subscription.id, 413)
    assert (await webpush(client, vapid).send(device_of(subscription), NOTE)).status == "rejected"
    huge = Notification(title="t", body="x" * 5000)
    outcome = await webpush(client, vapid).send(device_of(subscription), huge)
    assert outcome.status == "rejected" and outcome.http_status == 413
    assert push.messages == [] and not push.queued[subscription.id]  # the huge one was never sent


async def test_web_push_429_waits_for_retry_after_then_delivers(
        push: WebPushService, client: httpx.AsyncClient, vapid: VapidKeys) -> None:
    subscription = push.subscribe()
    push.inject(subscription.id, 429, {"Retry-After": "1"})
    outcome = await webpush(client, vapid).send(device_of(subscription), NOTE)
    assert outcome.status == "delivered" and outcome.attempts == 2
    assert len(push.messages) == 1


async def test_web_push_429_with_a_long_retry_after_gives_up_at_once(
        push: WebPushService, client: httpx.AsyncClient, vapid: VapidKeys) -> None:
    subscription = push.subscribe()
    push.inject(subscription.id, 429, {"Retry-After": "3600"})
    outcome = await webpush(client, vapid).send(device_of(subscription), NOTE)
    assert outcome.status == "throttled" and outcome.retry_after_s == 3600 and outcome.attempts == 1


async def test_endpoint_policy_refuses_inner_addresses_and_plain_http() -> None:
    strict = EndpointPolicy(allow_http=False, allow_private=False)
    for url in ("https://127.0.0.1/push/x", "https://10.0.0.7/push", "https://[::1]/p", "https://169.254.169.254/",
                "http://8.8.8.8/push", "ftp://push.example/x", "https://user:pw@8.8.8.8/x"):
        with pytest.raises(InvalidRequest):
            await strict.check(url)
    await strict.check("https://8.8.8.8/push/abc")  # a public address literal needs no resolver
    await EndpointPolicy(allow_http=True, allow_private=True).check("http://127.0.0.1:9/push/x")


async def test_web_push_refuses_an_inner_endpoint_when_sending(
        push: WebPushService, client: httpx.AsyncClient, vapid: VapidKeys) -> None:
    subscription = push.subscribe()
    strict = WebPushNotifier(client, vapid, EndpointPolicy(allow_http=True, allow_private=False), retrier(),
                             ttl_s=60, timeout_s=5.0)
    outcome = await strict.send(device_of(subscription), NOTE)
    assert outcome.status == "rejected" and push.messages == []


async def test_web_push_sends_to_the_address_it_checked(
        push: WebPushService, client: httpx.AsyncClient, vapid: VapidKeys) -> None:
    """The send resolves the endpoint's name once through the egress guard's resolver and connects to that
    address; when the name later answers a private address the send is refused (DNS rebinding)."""
    answers = [["127.0.0.1"], ["10.0.0.7"]]
    looked_up: list[str] = []

    class Rebinding:
        async def resolve(self, host: str, port: int) -> list[IPAddress]:
            looked_up.append(host)
            return [ipaddress.ip_address(a) for a in answers.pop(0)]

    guard = EgressGuard(EgressSettings(allow_cidrs=[ipaddress.ip_network("127.0.0.1/32")]), Rebinding())
    policy = EndpointPolicy(allow_http=True, allow_private=False, egress=guard)
    notifier = WebPushNotifier(client, vapid, policy, retrier(1), ttl_s=60, timeout_s=5.0)
    subscription = push.subscribe()
    device = device_of(subscription)
    named = Device(id=device.id, kind=device.kind, p256dh=device.p256dh, auth=device.auth,
                   endpoint=device.endpoint.replace("127.0.0.1", "push.test"))  # a name only our resolver knows
    outcome = await notifier.send(named, NOTE)
    # The service was reached under the name (it answers that the VAPID audience is not its own origin):
    # the name resolved once, by our resolver, and the connection went to the address checked.
    assert outcome.http_status == 401 and "Audience" in (outcome.detail or ""), outcome
    assert looked_up == ["push.test"]
    outcome = await notifier.send(named, NOTE)
    assert outcome.status == "rejected" and outcome.http_status is None, outcome  # refused before connecting
    assert looked_up == ["push.test", "push.test"]
    await policy.aclose()


# --- FCM -----------------------------------------------------------------------------------------------------

@pytest.fixture
async def fcm_service() -> AsyncIterator[FcmService]:
    async with FcmService() as service:
        yield service


def fcm(client: httpx.AsyncClient, service: FcmService, tmp_path: Path, attempts: int = 3) -> FcmNotifier:
    account = ServiceAccount.from_file(service.service_account(tmp_path / "sa.json"))
    tokens = AccessTokens(client, account, timeout_s=5.0)
    return FcmNotifier(client, account, tokens, retrier(attempts), base_url=service.url, ttl_s=600, timeout_s=5.0)


async def test_fcm_sends_a_v1_message_with_an_oauth_token(fcm_service: FcmService, client: httpx.AsyncClient,
                                                          tmp_path: Path) -> None:
    notifier = fcm(client, fcm_service, tmp_path)
    token = fcm_service.register()
    device = Device(id="f1", kind="fcm", endpoint=token)
    assert (await notifier.send(device, NOTE)).status == "delivered"
    assert (await notifier.send(device, NOTE)).status == "delivered"
    assert fcm_service.problems == [] and fcm_service.token_requests == 1  # the access token is reused
    message = fcm_service.messages[0].message
    assert message["token"] == token and message["notification"] == {"title": NOTE.title, "body": NOTE.body}
    assert message["data"] == NOTE.data and message["android"]["ttl"] == "600s"


async def test_fcm_unregistered_token_is_gone(fcm_service: FcmService, client: httpx.AsyncClient,
                                              tmp_path: Path) -> None:
    notifier = fcm(client, fcm_service, tmp_path)
    outcome = await notifier.send(Device(id="f1", kind="fcm", endpoint="never-registered-token-123"), NOTE)
    assert outcome.status == "gone" and outcome.detail == "UNREGISTERED" and outcome.attempts == 1


@pytest.mark.parametrize("status,code", [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE")])
async def test_fcm_retries_throttled_and_unavailable(status: int, code: str, fcm_service: FcmService,
                                                     client: httpx.AsyncClient, tmp_path: Path) -> None:
    token = fcm_service.register()
    fcm_service.inject(token, status, {"Retry-After": "0"}, FcmService.error(status, code, code), times=2)
    outcome = await fcm(client, fcm_service, tmp_path).send(Device(id="f1", kind="fcm", endpoint=token), NOTE)
    assert outcome.status == "delivered" and outcome.attempts == 3
    fcm_service.inject(token, status, {}, FcmService.error(status, code, code), times=2)
    outcome = await fcm(client, fcm_service, tmp_path, attempts=2).send(
        Device(id="f1", kind="fcm", endpoint=token), NOTE)
    assert outcome.status == ("throttled" if status == 429 else "failed") and outcome.attempts == 2


async def test_fcm_refreshes_a_rejected_access_token_once(fcm_service: FcmService, client: httpx.AsyncClient,
                                                          tmp_path: Path) -> None:
    notifier = fcm(client, fcm_service, tmp_path)
    token = fcm_service.register()
    device = Device(id="f1", kind="fcm", endpoint=token)
    assert (await notifier.send(device, NOTE)).status == "delivered"
    fcm_service.revoke_access_tokens()
    assert (await notifier.send(device, NOTE)).status == "delivered"
    assert fcm_service.token_requests == 2
    fcm_service.inject(token, 401, body=FcmService.error(401, "UNAUTHENTICATED"), times=5)
    outcome = await notifier.send(device, NOTE)
    assert outcome.status == "rejected" and outcome.http_status == 401
    assert fcm_service.token_requests == 3  # refreshed once, not in a loop
