"""Builds the notification service once from the ``notifications`` settings (called by ``container.py``)."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx

from atrium.guard.egress import EgressGuard
from atrium.notifications.delivery import EndpointPolicy, Retrier
from atrium.notifications.devices import DeviceRegistry
from atrium.notifications.fcm import AccessTokens, FcmNotifier, ServiceAccount
from atrium.notifications.ports import DeviceKind, Notifier
from atrium.notifications.service import NotificationService
from atrium.notifications.settings import NotificationSettings
from atrium.notifications.webpush import VapidKeys, WebPushNotifier
from atrium.store.engine import Database


def vapid_key_file(data_dir: Path) -> Path:
    return data_dir / "notifications" / "vapid_private.pem"


async def build_notifications(settings: NotificationSettings, *, data_dir: Path, db: Database,
                              http_client: httpx.AsyncClient, egress: EgressGuard | None = None) -> NotificationService:
    """Web Push when ``webpush`` is on (its VAPID key loaded, or generated into the data dir), FCM when a
    service account is configured; nothing is loaded while notifications are off."""
    policy = EndpointPolicy(allow_http=settings.allow_http_endpoints, allow_private=settings.allow_private_endpoints,
                            egress=egress, timeout_s=settings.request_timeout_s)
    devices = DeviceRegistry(db, policy, max_per_owner=settings.max_devices_per_owner)
    notifiers: dict[DeviceKind, Notifier] = {}
    public_key: str | None = None
    if settings.enabled:
        retrier = Retrier(settings.max_attempts, initial_s=settings.initial_backoff_s,
                          max_retry_after_s=settings.max_retry_after_s)
        if settings.webpush:
            configured = settings.vapid_private_key.get_secret_value() if settings.vapid_private_key else None
            keys = await anyio.to_thread.run_sync(VapidKeys.load, configured, vapid_key_file(data_dir),
                                                  settings.vapid_subject)
            public_key = keys.public_key
            notifiers["webpush"] = WebPushNotifier(http_client, keys, policy, retrier, ttl_s=settings.ttl_s,
                                                   timeout_s=settings.request_timeout_s)
        if settings.fcm_service_account_file is not None:
            account = await anyio.to_thread.run_sync(
                lambda: ServiceAccount.from_file(settings.fcm_service_account_file,  # type: ignore[arg-type]
                                                 token_uri=settings.fcm_token_uri))
            tokens = AccessTokens(http_client, account, timeout_s=settings.request_timeout_s)
            notifiers["fcm"] = FcmNotifier(http_client, account, tokens, retrier, base_url=settings.fcm_base_url,
                                           ttl_s=settings.ttl_s, timeout_s=settings.request_timeout_s)
    return NotificationService(devices, notifiers, enabled=settings.enabled, vapid_public_key=public_key,
                               job_kinds=tuple(settings.job_kinds))
