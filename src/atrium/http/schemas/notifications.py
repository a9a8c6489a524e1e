"""``/api/v1/notifications``: the caller's devices and the VAPID public key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field

from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.store.models import NotificationDevice


class DeviceView(View):
    """A device the caller receives notifications on. The endpoint or token itself is not repeated (it is
    a bearer capability): only the push service's host, for a Web Push subscription."""

    id: str
    kind: Literal["webpush", "fcm"]
    label: str | None = None
    push_service: str | None = Field(None, description="The Web Push service's host; null for FCM.")
    created_at: Timestamp
    last_delivered_at: Timestamp | None = None

    @classmethod
    def of(cls, device: NotificationDevice) -> DeviceView:
        return cls(id=device.id, kind="webpush" if device.kind == "webpush" else "fcm", label=device.label,
                   push_service=urlsplit(device.endpoint).hostname if device.kind == "webpush" else None,
                   created_at=device.created_at.isoformat(),
                   last_delivered_at=device.last_delivered_at.isoformat() if device.last_delivered_at else None)


class DeviceList(View):
    devices: list[DeviceView]


class VapidPublicKey(View):
    public_key: str = Field(description="The application server key (base64url, uncompressed P-256 point): "
                                        "pass it as `applicationServerKey` to `pushManager.subscribe`.")
