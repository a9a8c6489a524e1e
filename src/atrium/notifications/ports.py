"""The Notifier port: one push message to one device, and how it went.

Adapters: ``WebPushNotifier`` (RFC 8030 push, RFC 8291 ``aes128gcm`` message encryption, RFC 8292 VAPID;
``notifications/webpush.py``) and ``FcmNotifier`` (Firebase Cloud Messaging HTTP v1 with an OAuth2 token
from a service account; ``notifications/fcm.py``). An adapter never raises a service's failure: it
answers an ``Outcome``, and the caller (``NotificationService``) acts on it (a device whose subscription
is ``gone`` is deleted). Retries of throttled or unavailable answers happen inside the adapter
(``notifications/delivery.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

DeviceKind = Literal["webpush", "fcm"]
# delivered: the service accepted it; gone: the subscription or token no longer exists (delete the device);
# rejected: this message will never be accepted (too large, malformed, refused credentials);
# throttled: rate limited, out of attempts (``retry_after_s`` says when to try again); failed: anything else.
Status = Literal["delivered", "gone", "rejected", "throttled", "failed"]


@dataclass(frozen=True, slots=True)
class Device:
    """Where to push: a Web Push subscription (``endpoint``, ``p256dh``, ``auth``) or an FCM registration
    token (``endpoint`` holds the token)."""

    id: str
    kind: DeviceKind
    endpoint: str
    p256dh: str | None = None  # the user agent's P-256 public key, base64url (Web Push)
    auth: str | None = None  # the user agent's 16-byte authentication secret, base64url (Web Push)


@dataclass(frozen=True, slots=True)
class Notification:
    """What the user sees (``title``, ``body``) and what the app gets (``data``: strings only, as FCM
    requires). ``ttl_s`` None: the configured default."""

    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)
    ttl_s: int | None = None
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    http_status: int | None = None
    detail: str = ""  # the service's error code or a short reason; never a credential
    retry_after_s: float | None = None
    attempts: int = 1

    @property
    def retryable(self) -> bool:
        return self.status == "throttled" or (self.status == "failed" and self.http_status is not None
                                              and self.http_status >= 500)


class Notifier(Protocol):
    """Sends one notification to one device of the adapter's ``kind``."""

    kind: DeviceKind

    async def send(self, device: Device, notification: Notification) -> Outcome: ...
