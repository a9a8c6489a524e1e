"""The ``notifications`` section: push notifications to a user's devices (Web Push and FCM). Composed into
``Settings`` by ``atrium.settings``. Off by default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator


class NotificationSettings(BaseModel):
    """Who sends (VAPID keys, the FCM service account), where to (the services' base URLs, overridable for
    tests and proxies), which device endpoints are acceptable, and how hard to try.

    ``vapid_private_key``: the VAPID key (PEM, or the raw 32-byte key as base64url); unset: generated
    into ``data_dir/notifications/vapid_private.pem`` on first start and reused after. The public key is
    served at ``GET /api/v1/notifications/vapid-public-key``. FCM is on when
    ``fcm_service_account_file`` names a service-account JSON (``project_id``, ``client_email``,
    ``private_key``, ``token_uri``)."""

    enabled: bool = False
    webpush: bool = True
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = Field("mailto:admin@localhost", max_length=200)
    fcm_service_account_file: Path | None = None
    fcm_base_url: str = Field("https://fcm.googleapis.com", max_length=500)
    fcm_token_uri: str | None = Field(None, max_length=500)  # unset: the service account's token_uri
    # Device endpoints: https only, public addresses only, unless these allow local development.
    allow_http_endpoints: bool = False
    allow_private_endpoints: bool = False
    ttl_s: int = Field(86_400, ge=0, le=2_419_200)  # how long a push service keeps an undelivered message
    max_attempts: int = Field(3, ge=1, le=10)  # per device, for 429 and 5xx answers
    initial_backoff_s: float = Field(0.5, ge=0)
    max_retry_after_s: float = Field(30.0, ge=0)  # a longer Retry-After is not waited for
    request_timeout_s: float = Field(10.0, gt=0)
    max_devices_per_owner: int = Field(20, ge=1, le=1000)  # the oldest device goes when a new one passes it
    job_kinds: list[str] = Field(default_factory=lambda: ["ingest", "ingest_url"])  # jobs whose end is notified

    @field_validator("vapid_subject")
    @classmethod
    def _subject_shape(cls, value: str) -> str:
        if not value.startswith(("mailto:", "https://")):
            raise ValueError("notifications.vapid_subject must be a mailto: or https: URL (RFC 8292)")
        return value

    @field_validator("vapid_private_key")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is not None and not value.get_secret_value().strip() else value
