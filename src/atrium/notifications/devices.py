"""The devices a principal receives notifications on: registered, listed and removed by their owner only
(``accounts/ownership.py``: private to the user, or to the key acting as no user); read by the
notification service on the owner's behalf, and forgotten when the push service says they are gone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select, update

from atrium.accounts.ownership import Owner, owned_by, owner_of, principal_session
from atrium.accounts.principal import Principal
from atrium.errors import InvalidRequest, NotFound
from atrium.notifications.delivery import EndpointPolicy
from atrium.notifications.ports import Device, DeviceKind
from atrium.notifications.webpush import b64url_decode
from atrium.store.engine import Database
from atrium.store.models import NotificationDevice


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to register: a Web Push subscription (``endpoint`` URL, ``p256dh``, ``auth``) or an FCM
    registration token (``endpoint``)."""

    kind: DeviceKind
    endpoint: str
    p256dh: str | None = None
    auth: str | None = None
    label: str | None = None


def endpoint_hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


def check_subscription_keys(p256dh: str, auth: str) -> None:
    """``p256dh`` must be an uncompressed P-256 point, ``auth`` 16 bytes (RFC 8291), both base64url."""
    try:
        point, secret = b64url_decode(p256dh), b64url_decode(auth)
    except ValueError as exc:
        raise InvalidRequest("keys.p256dh and keys.auth must be base64url.") from exc
    if len(secret) != 16:
        raise InvalidRequest("keys.auth must be 16 bytes.")
    if len(point) != 65 or point[0] != 4:
        raise InvalidRequest("keys.p256dh must be an uncompressed P-256 public key (65 bytes).")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise InvalidRequest("keys.p256dh is not a point on P-256.") from exc


def as_device(row: NotificationDevice) -> Device:
    kind: DeviceKind = "webpush" if row.kind == "webpush" else "fcm"
    return Device(id=row.id, kind=kind, endpoint=row.endpoint, p256dh=row.p256dh, auth=row.auth)


class DeviceRegistry:
    """The ``notification_devices`` table, always through the owner's scope."""

    def __init__(self, db: Database, policy: EndpointPolicy, *, max_per_owner: int) -> None:
        self.db = db
        self.policy = policy
        self.max_per_owner = max_per_owner

    async def register(self, principal: Principal, spec: DeviceSpec) -> tuple[NotificationDevice, bool]:
        """The device, and whether it is new (the same endpoint registered again updates its keys). Past
        ``max_per_owner`` devices, the oldest is removed."""
        if spec.kind == "webpush":
            if spec.p256dh is None or spec.auth is None:
                raise InvalidRequest("A Web Push subscription needs keys.p256dh and keys.auth.")
            check_subscription_keys(spec.p256dh, spec.auth)
            await self.policy.check(spec.endpoint)
        digest = endpoint_hash(spec.endpoint)
        async with principal_session(self.db, principal) as session:
            mine = owned_by(NotificationDevice, principal)
            existing = await session.scalar(select(NotificationDevice).where(
                NotificationDevice.org_id == principal.org_id, NotificationDevice.endpoint_hash == digest,
                NotificationDevice.kind == spec.kind, mine))
            if existing is not None:
                existing.p256dh, existing.auth = spec.p256dh, spec.auth
                existing.label = spec.label if spec.label is not None else existing.label
                return existing, False
            device = NotificationDevice(org_id=principal.org_id, kind=spec.kind, endpoint=spec.endpoint,
                                        endpoint_hash=digest, p256dh=spec.p256dh, auth=spec.auth, label=spec.label,
                                        **owner_of(principal).columns())
            session.add(device)
            await session.flush()
            ids = list(await session.scalars(
                select(NotificationDevice.id).where(NotificationDevice.org_id == principal.org_id, mine)
                .order_by(NotificationDevice.created_at.desc(), NotificationDevice.id)))
            surplus = [device_id for device_id in ids if device_id != device.id][self.max_per_owner - 1:]
            if surplus:
                await session.execute(delete(NotificationDevice).where(
                    NotificationDevice.org_id == principal.org_id, NotificationDevice.id.in_(surplus)))
            return device, True

    async def owned(self, principal: Principal) -> list[NotificationDevice]:
        async with principal_session(self.db, principal) as session:
            return list(await session.scalars(
                select(NotificationDevice).where(NotificationDevice.org_id == principal.org_id,
                                                 owned_by(NotificationDevice, principal))
                .order_by(NotificationDevice.created_at, NotificationDevice.id)))

    async def remove(self, principal: Principal, device_id: str) -> None:
        async with principal_session(self.db, principal) as session:
            removed = await session.execute(delete(NotificationDevice).where(
                NotificationDevice.org_id == principal.org_id, NotificationDevice.id == device_id,
                owned_by(NotificationDevice, principal)))
            if removed.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFound("No such device.")

    # -- for the notification service (the owner is known: a job's, a flow's) -----------------------------

    async def of_owner(self, org_id: str, owner: Owner) -> list[Device]:
        async with self.db.tenant_session(org_id) as session:
            rows = await session.scalars(select(NotificationDevice).where(
                NotificationDevice.org_id == org_id, *owner.match(NotificationDevice)))
            return [as_device(row) for row in rows]

    async def forget(self, org_id: str, device_ids: list[str]) -> None:
        async with self.db.tenant_session(org_id) as session:
            await session.execute(delete(NotificationDevice).where(
                NotificationDevice.org_id == org_id, NotificationDevice.id.in_(device_ids)))

    async def delivered(self, org_id: str, device_ids: list[str]) -> None:
        async with self.db.tenant_session(org_id) as session:
            await session.execute(update(NotificationDevice).where(
                NotificationDevice.org_id == org_id, NotificationDevice.id.in_(device_ids))
                .values(last_delivered_at=datetime.now(UTC)))
