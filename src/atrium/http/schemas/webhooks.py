"""``/api/v1/webhooks``: an organisation's webhooks (the secret only in the answer that made it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.store.models import Webhook

EventName = Literal["job.succeeded", "job.failed", "job.cancelled"]


class WebhookView(View):
    """A webhook, with the outcome of its last delivery."""

    id: str
    url: str
    events: list[EventName]
    description: str | None = None
    created_at: Timestamp
    created_by: str | None = Field(None, description="The user who made it (null: a key acting as no user, or "
                                                     "a user since removed).")
    last_attempt_at: Timestamp | None = None
    last_status: Literal["delivered", "failed"] | None = Field(
        None, description="The last delivery's outcome (after its retries); null before the first.")
    last_http_status: int | None = None
    last_error: str | None = Field(None, description="Why the last delivery failed (a short reason).")
    failures: int = Field(description="Deliveries that failed in a row since the last one that succeeded.")

    @classmethod
    def of(cls, hook: Webhook) -> WebhookView:
        status = hook.last_status if hook.last_status in ("delivered", "failed") else None
        return cls(id=hook.id, url=hook.url, events=list(hook.events), description=hook.description,
                   created_at=hook.created_at.isoformat(), created_by=hook.user_id,
                   last_attempt_at=hook.last_attempt_at.isoformat() if hook.last_attempt_at else None,
                   last_status=status, last_http_status=hook.last_http_status, last_error=hook.last_error,
                   failures=hook.failures)


class WebhookCreated(WebhookView):
    secret: str = Field(description="The signing secret (`whsec_...`, Standard Webhooks): shown this once; "
                                    "verify each delivery's `webhook-signature` with it.")


class WebhookList(View):
    webhooks: list[WebhookView]
