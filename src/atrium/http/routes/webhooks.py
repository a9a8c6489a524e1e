"""``/api/v1/webhooks``: an organisation's webhooks, told of its jobs' ends (signed, Standard Webhooks).
Managed by the organisation's unscoped admins and owners (a division-scoped admin is ``403``)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.http.deps import ClientIp, PrincipalDep, ResourceId, WebhooksDep, require_role
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses
from atrium.http.schemas.webhooks import EventName, WebhookCreated, WebhookList, WebhookView
from atrium.webhooks.registry import EVENTS

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], dependencies=[require_role("admin")],
                   responses=AUTHENTICATED)


def _every_event() -> list[EventName]:
    return ["job.succeeded", "job.failed", "job.cancelled"]


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://hooks.example.com/atrium", "events": ["job.succeeded", "job.failed"],
        "description": "ingestion results"}]})
    url: str = Field(min_length=10, max_length=2048, description="An https URL of a public host.")
    events: list[EventName] = Field(default_factory=_every_event, min_length=1, max_length=len(EVENTS),
                                    description="Which job ends it receives (default: all).")
    description: str | None = Field(None, min_length=1, max_length=200)


@router.post("", response_model=WebhookCreated, status_code=201, responses={**BODY, **error_responses(409)})
async def create_webhook(body: WebhookBody, principal: PrincipalDep, webhooks: WebhooksDep,
                         ip: ClientIp) -> WebhookCreated:
    """Register a webhook of the caller's organisation. The answer holds its signing ``secret``, shown this
    once. ``422`` for a URL that is not ``https`` or whose host is not a public address; ``409`` past the
    organisation's limit."""
    hook, secret = await webhooks.create(principal, body.url, body.events, body.description, ip=ip)
    return WebhookCreated(**WebhookView.of(hook).model_dump(), secret=secret)


@router.get("", response_model=WebhookList)
async def list_webhooks(principal: PrincipalDep, webhooks: WebhooksDep) -> WebhookList:
    """The organisation's webhooks (without their secrets), oldest first."""
    return WebhookList(webhooks=[WebhookView.of(hook) for hook in await webhooks.listed(principal)])


@router.delete("/{webhook_id}", status_code=204, response_class=Response, responses=error_responses(404))
async def delete_webhook(webhook_id: ResourceId, principal: PrincipalDep, webhooks: WebhooksDep,
                         ip: ClientIp) -> Response:
    """Remove one of the organisation's webhooks (``404`` for any other)."""
    await webhooks.remove(principal, webhook_id, ip=ip)
    return Response(status_code=204)
