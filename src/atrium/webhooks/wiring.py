"""Builds the webhook registry and dispatcher from the ``webhooks`` and ``egress`` settings."""

from __future__ import annotations

from atrium.guard.egress import EgressGuard
from atrium.notifications.delivery import EndpointPolicy
from atrium.store.engine import Database
from atrium.webhooks.dispatch import WebhookDispatcher
from atrium.webhooks.registry import WebhookRegistry
from atrium.webhooks.settings import WebhookSettings


def build_webhooks(settings: WebhookSettings, db: Database, egress: EgressGuard) -> WebhookDispatcher:
    """The dispatcher (the job queue's watcher) with its registry (``.registry``, what the routes use); one
    egress-guarded client for every delivery of the process, closed by ``close()``."""
    policy = EndpointPolicy(allow_http=settings.allow_http, allow_private=settings.allow_private, egress=egress,
                            timeout_s=settings.request_timeout_s)
    registry = WebhookRegistry(db, policy, max_per_org=settings.max_per_org)
    return WebhookDispatcher(registry, policy.client, settings)
