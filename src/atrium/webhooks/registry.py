"""The organisation's webhooks: register (the signing secret is made here and shown once), list, remove,
and, for deliveries, those subscribed to an event and the record of the last delivery.

Webhooks are an organisation-wide setting: only an unscoped admin or owner of the organisation manages them
(a division-scoped credential is refused; on PostgreSQL the ``principal_access`` policy hides them from
every other principal too). Another organisation's webhook is ``NotFound``.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import func, select, update

from atrium.accounts import audit
from atrium.accounts.ownership import owner_of, principal_session
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.notifications.delivery import EndpointPolicy
from atrium.store.engine import Database
from atrium.store.models import Webhook

EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class WebhookRegistry:
    """The ``webhooks`` table, per organisation. ``policy`` says which URLs are acceptable."""

    def __init__(self, db: Database, policy: EndpointPolicy, *, max_per_org: int) -> None:
        self.db = db
        self.policy = policy
        self.max_per_org = max_per_org

    @staticmethod
    def _org_wide_admin(principal: Principal) -> None:
        if not principal.has_role("admin"):
            raise Forbidden("This needs the admin role.")
        if principal.division_id is not None:
            raise Forbidden("Webhooks are an organisation-wide setting: a division-scoped credential cannot "
                            "manage them.")

    async def create(self, principal: Principal, url: str, events: Sequence[str], description: str | None, *,
                     ip: str | None = None) -> tuple[Webhook, str]:
        """A new webhook of the caller's organisation and its secret (the only time it is shown)."""
        self._org_wide_admin(principal)
        unknown = sorted(set(events) - set(EVENTS))
        if unknown or not events:
            raise InvalidRequest(f"events must be some of {', '.join(EVENTS)}.")
        await self.policy.check(url)  # https (unless allowed otherwise), a public host
        secret = new_secret()
        async with principal_session(self.db, principal) as session:
            count = await session.scalar(select(func.count()).select_from(Webhook)
                                         .where(Webhook.org_id == principal.org_id))
            if int(count or 0) >= self.max_per_org:
                raise Conflict(f"An organisation has at most {self.max_per_org} webhooks.")
            hook = Webhook(org_id=principal.org_id, url=url, events=sorted(set(events), key=EVENTS.index),
                           description=description, secret=secret, failures=0, **owner_of(principal).columns())
            session.add(hook)
            await session.flush()
            await audit.record(session, "webhook.create", actor=principal, target_type="webhook",
                               target_id=hook.id, details={"host": urlsplit(url).hostname, "events": hook.events},
                               ip=ip)
            session.expunge(hook)
        return hook, secret

    async def listed(self, principal: Principal) -> list[Webhook]:
        self._org_wide_admin(principal)
        async with principal_session(self.db, principal) as session:
            rows = list(await session.scalars(select(Webhook).where(Webhook.org_id == principal.org_id)
                                              .order_by(Webhook.created_at, Webhook.id)))
            session.expunge_all()
        return rows

    async def remove(self, principal: Principal, webhook_id: str, *, ip: str | None = None) -> None:
        self._org_wide_admin(principal)
        async with principal_session(self.db, principal) as session:
            hook = await session.scalar(select(Webhook).where(Webhook.org_id == principal.org_id,
                                                              Webhook.id == webhook_id))
            if hook is None:
                raise NotFound("No such webhook.")
            await session.delete(hook)
            await audit.record(session, "webhook.delete", actor=principal, target_type="webhook",
                               target_id=webhook_id, details={"host": urlsplit(hook.url).hostname}, ip=ip)

    async def subscribed(self, org_id: str, event: str) -> list[Webhook]:
        """``org_id``'s webhooks that subscribed to ``event`` (for a delivery: the service scope)."""
        async with self.db.tenant_session(org_id) as session:
            rows = list(await session.scalars(select(Webhook).where(Webhook.org_id == org_id)))
            session.expunge_all()
        return [row for row in rows if event in (row.events or ())]

    async def record(self, org_id: str, webhook_id: str, *, delivered: bool, http_status: int | None,
                     error: str | None) -> None:
        """Keep a delivery's outcome on the webhook (nothing if it was removed meanwhile)."""
        values: dict[str, object] = {"last_attempt_at": datetime.now(UTC), "last_http_status": http_status,
                                     "last_status": "delivered" if delivered else "failed",
                                     "last_error": None if delivered else (error or "failed")[:300],
                                     "failures": 0 if delivered else Webhook.failures + 1}
        async with self.db.tenant_session(org_id) as session:
            await session.execute(update(Webhook).where(Webhook.org_id == org_id, Webhook.id == webhook_id)
                                  .values(**values))
