"""Web Push adapter (port: ``notifications/ports.py``): RFC 8030 push with an RFC 8291 ``aes128gcm``
encrypted body (``http_ece``) and RFC 8292 VAPID authorization (``py_vapid``).

A message is POSTed to the subscription's endpoint with ``TTL``, ``Urgency``, ``Content-Encoding:
aes128gcm`` and ``Authorization: vapid t=<ES256 JWT>,k=<public key>``; the JWT's ``aud`` is the
endpoint's origin, its ``exp`` 12 hours ahead (one token is reused per origin for 11 hours). What the push
service answers: 201 delivered; 404/410 the subscription is gone; 413 too large; 429 throttled
(``Retry-After``); 400/401/403 rejected; 5xx failed (429 and 5xx retried, ``delivery.Retrier``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException

from atrium.errors import InvalidRequest
from atrium.guard.egress import FetchFailed, UrlNotAllowed
from atrium.notifications.delivery import EndpointPolicy, Retrier, retry_after_s
from atrium.notifications.ports import Device, DeviceKind, Notification, Outcome

log = logging.getLogger(__name__)

# Push services must accept 4096 bytes of encrypted body (RFC 8030 7.2): the 86-byte aes128gcm header, one
# record's 16-byte tag and its 1-byte delimiter leave 3993 bytes of plaintext.
MAX_PLAINTEXT = 3993
TOKEN_LIFETIME_S = 12 * 3600
TOKEN_REUSE_S = 11 * 3600


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url_encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


class VapidKeys:
    """The application server's VAPID key pair and the ``Authorization`` headers it signs (cached per
    origin). The private key is never logged nor served."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        # "no-strict": any mailto: or https: subject (RFC 8292; checked by the settings), not only py_vapid's
        # narrower pattern (an https URL with a path, say).
        self._vapid = Vapid02(private_key, conf={"no-strict": True})
        self.subject = subject
        public = private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                       serialization.PublicFormat.UncompressedPoint)
        self.public_key = b64url_encode(public)  # what browsers pass as applicationServerKey
        self._headers: dict[str, tuple[float, str]] = {}

    @classmethod
    def load(cls, configured: str | None, key_file: Path, subject: str) -> VapidKeys:
        """From ``configured`` (PEM, or the raw key as base64url), else ``key_file``, else a new key saved to
        ``key_file`` (mode 0600). Blocking: call it in a thread."""
        if configured:
            return cls(_parse_private_key(configured), subject)
        if key_file.is_file():
            return cls(_parse_private_key(key_file.read_text()), subject)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        keys = cls(key, subject)
        log.info("generated a VAPID key pair (public key %s) in %s", keys.public_key, key_file)
        return keys

    def authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._headers.get(audience)
        if cached is not None and cached[0] > now:
            return cached[1]
        header = str(self._vapid.sign({"aud": audience, "sub": self.subject,
                                       "exp": int(now) + TOKEN_LIFETIME_S})["Authorization"])
        self._headers[audience] = (now + TOKEN_REUSE_S, header)
        return header


def _parse_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        key = ec.derive_private_key(int.from_bytes(b64url_decode(text), "big"), ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the VAPID key must be a P-256 (prime256v1) private key")
    return key


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """The RFC 8291 ``aes128gcm`` body for a subscription's keys (a new sender key and salt each time)."""
    return bytes(http_ece.encrypt(plaintext, salt=os.urandom(16), private_key=ec.generate_private_key(ec.SECP256R1()),
                                  dh=b64url_decode(p256dh), auth_secret=b64url_decode(auth), version="aes128gcm"))


def payload_of(notification: Notification) -> bytes:
    return json.dumps({"title": notification.title, "body": notification.body, "data": notification.data},
                      ensure_ascii=False, separators=(",", ":")).encode()


class WebPushNotifier:
    """Sends to Web Push subscriptions over the shared HTTP client."""

    kind: DeviceKind = "webpush"

    def __init__(self, client: httpx.AsyncClient, keys: VapidKeys, policy: EndpointPolicy, retrier: Retrier, *,
                 ttl_s: int, timeout_s: float) -> None:
        self._client = client
        self.keys = keys
        self._policy = policy
        self._retrier = retrier
        self._ttl_s = ttl_s
        self._timeout = httpx.Timeout(timeout_s)

    async def send(self, device: Device, notification: Notification) -> Outcome:
        if device.p256dh is None or device.auth is None:
            return Outcome("rejected", detail="subscription without keys")
        plaintext = payload_of(notification)
        if len(plaintext) > MAX_PLAINTEXT:
            return Outcome("rejected", 413, "payload too large")
        try:
            self._policy.check_shape(device.endpoint)  # the address is checked by the client, when connecting
        except InvalidRequest as exc:
            return Outcome("rejected", detail=exc.message)
        try:
            body = encrypt(plaintext, device.p256dh, device.auth)
            authorization = self.keys.authorization(device.endpoint)
        except (ValueError, VapidException, http_ece.ECEException) as exc:  # not a P-256 point, a bad audience
            return Outcome("rejected", detail=f"cannot encrypt or sign ({type(exc).__name__})")
        headers = {"TTL": str(self._ttl_s if notification.ttl_s is None else notification.ttl_s),
                   "Urgency": notification.urgency, "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "Authorization": authorization}
        return await self._retrier.run(lambda: self._post(device.endpoint, body, headers))

    async def _post(self, endpoint: str, body: bytes, headers: dict[str, str]) -> Outcome:
        try:
            # Through the egress-guarded client: resolved once, checked, connected to the checked address.
            response = await self._policy.client.post(endpoint, content=body, headers=headers, timeout=self._timeout)
        except UrlNotAllowed:
            return Outcome("rejected", detail="The endpoint's host is not a public address.")
        except FetchFailed:
            return Outcome("failed", detail="the endpoint's host cannot be resolved")
        except httpx.HTTPError as exc:
            return Outcome("failed", detail=f"push service unreachable ({type(exc).__name__})")
        status = response.status_code
        if status in (200, 201, 202):
            return Outcome("delivered", status)
        if status in (404, 410):
            return Outcome("gone", status, "subscription expired or unsubscribed")
        if status == 413:
            return Outcome("rejected", status, "payload too large")
        if status == 429:
            return Outcome("throttled", status, "rate limited", retry_after_s(response.headers))
        if status >= 500:
            return Outcome("failed", status, "push service error", retry_after_s(response.headers))
        return Outcome("rejected", status, _reason(response))


def _reason(response: httpx.Response) -> str:
    text = response.text[:200].strip()
    return text or f"HTTP {response.status_code}"
