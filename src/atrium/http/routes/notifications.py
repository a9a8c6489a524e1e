"""``/api/v1/notifications``: register, list and remove the caller's devices (Web Push subscriptions, FCM
tokens), and the VAPID public key browsers subscribe with. Every device is its owner's alone."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from atrium.errors import InvalidRequest, NotFound
from atrium.http.deps import NotificationServiceDep, PrincipalDep, ResourceId
from atrium.http.schemas.errors import AUTHENTICATED, error_responses
from atrium.http.schemas.notifications import DeviceList, DeviceView, VapidPublicKey
from atrium.notifications.devices import DeviceSpec
from atrium.notifications.service import NotificationService

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"], responses=AUTHENTICATED)
B64URL = r"^[A-Za-z0-9_-]+={0,2}$"


async def _enabled(service: NotificationServiceDep) -> NotificationService:
    if not service.enabled:
        raise NotFound("Notifications are not enabled on this server.")
    return service


NotificationsDep = Annotated[NotificationService, Depends(_enabled)]


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p256dh: str = Field(min_length=86, max_length=88, pattern=B64URL)
    auth: str = Field(min_length=22, max_length=24, pattern=B64URL)


class WebPushDevice(BaseModel):
    """A browser's ``PushSubscription.toJSON()`` (``expirationTime`` is accepted and ignored)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "kind": "webpush", "endpoint": "https://fcm.googleapis.com/fcm/send/dXJ...",
        "keys": {"p256dh": "BNcR...", "auth": "tBHI..."}}]})
    kind: Literal["webpush"]
    endpoint: str = Field(min_length=12, max_length=2048)
    keys: SubscriptionKeys
    expirationTime: float | None = None
    label: str | None = Field(None, min_length=1, max_length=100)


class FcmDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["fcm"]
    token: str = Field(min_length=20, max_length=4096, pattern=r"^[A-Za-z0-9_:\-.]+$")
    label: str | None = Field(None, min_length=1, max_length=100)


DeviceBody = Annotated[WebPushDevice | FcmDevice, Field(discriminator="kind")]


@router.post("/devices", response_model=DeviceView, status_code=201, responses={
    200: {"model": DeviceView, "description": "Already registered: its keys and label updated."},
    **error_responses(400, 404, 413)})
async def register(body: DeviceBody, principal: PrincipalDep, notifications: NotificationsDep) -> JSONResponse:
    """Register a device to receive the caller's notifications (201; 200 when the same endpoint or token
    was registered before). A Web Push endpoint must be an https URL of a public host."""
    if not notifications.accepts(body.kind):
        raise InvalidRequest(f"This server does not send {body.kind} notifications.")
    if isinstance(body, WebPushDevice):
        spec = DeviceSpec("webpush", body.endpoint, body.keys.p256dh, body.keys.auth, body.label)
    else:
        spec = DeviceSpec("fcm", body.token, label=body.label)
    device, created = await notifications.devices.register(principal, spec)
    return JSONResponse(DeviceView.of(device).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/devices", response_model=DeviceList, responses=error_responses(404))
async def devices(principal: PrincipalDep, notifications: NotificationsDep) -> DeviceList:
    """The caller's own devices, oldest first."""
    return DeviceList(devices=[DeviceView.of(device) for device in await notifications.devices.owned(principal)])


@router.delete("/devices/{device_id}", status_code=204, response_class=Response, responses=error_responses(404))
async def remove(device_id: ResourceId, principal: PrincipalDep, notifications: NotificationsDep) -> Response:
    """Stop sending to one of the caller's devices (404 for any other device)."""
    await notifications.devices.remove(principal, device_id)
    return Response(status_code=204)


@router.get("/vapid-public-key", response_model=VapidPublicKey, responses=error_responses(404))
async def vapid_public_key(principal: PrincipalDep, notifications: NotificationsDep) -> VapidPublicKey:
    """The key a browser subscribes with (``applicationServerKey``); 404 when Web Push is off."""
    if notifications.vapid_public_key is None:
        raise NotFound("Web Push is not enabled on this server.")
    return VapidPublicKey(public_key=notifications.vapid_public_key)
