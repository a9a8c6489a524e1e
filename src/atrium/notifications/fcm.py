"""Firebase Cloud Messaging adapter (port: ``notifications/ports.py``): the HTTP v1 API.

``POST {base_url}/v1/projects/{project_id}/messages:send`` with ``{"message": {"token", "notification":
{"title", "body"}, "data": {str: str}}}`` and ``Authorization: Bearer <OAuth2 access token>``. The token
comes from the service account's key by the JWT-bearer grant (RFC 7523): an RS256 assertion (``iss`` the
service account's email, ``scope`` firebase.messaging, ``aud`` the token URI) POSTed to its
``token_uri``; kept until a minute before it expires. What FCM answers: 200 delivered; 404 or
``UNREGISTERED`` the token is gone (as is ``SENDER_ID_MISMATCH``: it belongs to another project); 401 the
access token is refreshed once and the message sent again; 429 ``QUOTA_EXCEEDED`` and 5xx retried with
backoff (``Retry-After`` honoured); 400 ``INVALID_ARGUMENT`` rejected.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from atrium.notifications.delivery import Retrier, retry_after_s
from atrium.notifications.ports import Device, DeviceKind, Notification, Outcome

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GONE_CODES = ("UNREGISTERED", "SENDER_ID_MISMATCH")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    project_id: str
    client_email: str
    private_key: str  # PEM; never logged
    private_key_id: str | None
    token_uri: str

    @classmethod
    def from_file(cls, path: Path, *, token_uri: str | None = None) -> ServiceAccount:
        """Reads a Google service-account JSON (blocking: call it in a thread)."""
        info = json.loads(path.read_text())
        missing = [name for name in ("project_id", "client_email", "private_key") if not info.get(name)]
        if missing:
            raise ValueError(f"{path}: not a service account key (missing {', '.join(missing)})")
        return cls(project_id=info["project_id"], client_email=info["client_email"],
                   private_key=info["private_key"], private_key_id=info.get("private_key_id"),
                   token_uri=token_uri or info.get("token_uri") or "https://oauth2.googleapis.com/token")


class AccessTokens:
    """OAuth2 access tokens of a service account, fetched when needed and shared by concurrent sends."""

    def __init__(self, client: httpx.AsyncClient, account: ServiceAccount, *, timeout_s: float) -> None:
        self._client = client
        self._account = account
        self._timeout = httpx.Timeout(timeout_s)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, *, refresh: bool = False, stale: str | None = None) -> str:
        """A valid token; ``refresh``: a new one, unless another send already replaced ``stale``."""
        async with self._lock:
            fresh = self._token is not None and time.time() < self._expires_at - 60
            if fresh and not (refresh and self._token == stale):
                assert self._token is not None
                return self._token
            self._token, self._expires_at = await self._fetch()
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        account, now = self._account, int(time.time())
        assertion = jwt.encode({"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
                                "iat": now, "exp": now + 3600}, account.private_key, algorithm="RS256",
                               headers={"kid": account.private_key_id} if account.private_key_id else None)
        try:
            response = await self._client.post(account.token_uri, data={"grant_type": GRANT_TYPE,
                                                                        "assertion": assertion},
                                               timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise TokenError(f"token endpoint unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise TokenError(f"token endpoint answered HTTP {response.status_code}")
        body = response.json()
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenError("token endpoint answered no access_token")
        return token, time.time() + float(body.get("expires_in", 3600))


class TokenError(Exception):
    """No access token could be obtained (the message says why, never with the key or the assertion)."""


class FcmNotifier:
    """Sends to FCM registration tokens over the shared HTTP client."""

    kind: DeviceKind = "fcm"

    def __init__(self, client: httpx.AsyncClient, account: ServiceAccount, tokens: AccessTokens, retrier: Retrier,
                 *, base_url: str, ttl_s: int, timeout_s: float) -> None:
        self._client = client
        self._tokens = tokens
        self._retrier = retrier
        self._url = f"{base_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self._ttl_s = ttl_s
        self._timeout = httpx.Timeout(timeout_s)

    def message(self, device: Device, notification: Notification) -> dict[str, Any]:
        ttl = self._ttl_s if notification.ttl_s is None else notification.ttl_s
        return {"message": {
            "token": device.endpoint,
            "notification": {"title": notification.title, "body": notification.body},
            "data": {str(key): str(value) for key, value in notification.data.items()},
            "android": {"ttl": f"{ttl}s", "priority": "high" if notification.urgency == "high" else "normal"},
            "webpush": {"headers": {"TTL": str(ttl), "Urgency": notification.urgency}},
        }}

    async def send(self, device: Device, notification: Notification) -> Outcome:
        body = self.message(device, notification)
        return await self._retrier.run(lambda: self._send_refreshing(body))

    async def _send_refreshing(self, body: dict[str, Any]) -> Outcome:
        try:
            token = await self._tokens.get()
            outcome = await self._post(body, token)
            if outcome.http_status == 401:  # the token was revoked or expired early: one new token, one more try
                outcome = await self._post(body, await self._tokens.get(refresh=True, stale=token))
        except TokenError as exc:
            return Outcome("failed", detail=str(exc))
        return outcome

    async def _post(self, body: dict[str, Any], token: str) -> Outcome:
        try:
            response = await self._client.post(self._url, json=body, timeout=self._timeout,
                                               headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            return Outcome("failed", detail=f"FCM unreachable ({type(exc).__name__})")
        status = response.status_code
        if status == 200:
            return Outcome("delivered", status)
        code = _error_code(response)
        if status == 404 or code in GONE_CODES:
            return Outcome("gone", status, code or "not found")
        if status == 429:
            return Outcome("throttled", status, code or "QUOTA_EXCEEDED", retry_after_s(response.headers))
        if status >= 500:
            return Outcome("failed", status, code or "UNAVAILABLE", retry_after_s(response.headers))
        return Outcome("rejected", status, code or f"HTTP {status}")


def _error_code(response: httpx.Response) -> str:
    """FCM's error code: ``error.details[].errorCode`` (``FcmError``), else ``error.status``."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return ""
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")
