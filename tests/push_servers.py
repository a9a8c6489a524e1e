"""Local push services speaking each one's wire format, on loopback ports (aiohttp), for the notification
tests: nothing of Atrium's is faked, the adapters talk HTTP to these.

* ``WebPushService``: subscriptions with a real user-agent key pair; ``POST /push/{id}`` checks the VAPID
  ``Authorization`` (``vapid t=<ES256 JWT>,k=<key>``: signature verified with ``k``, ``aud`` the origin,
  ``exp`` within 24 hours, ``sub`` mailto:/https:), ``Content-Encoding: aes128gcm`` and ``TTL``, then
  DECRYPTS the body with the subscription's private key (``http_ece``) and keeps the plaintext. Answers
  201, or what a test queued (410, 429 + Retry-After, 413...); an unknown subscription is 404.
* ``FcmService``: a service account (an RSA key) whose ``token_uri`` is ``POST /token``: the JWT-bearer
  assertion is verified with the account's public key and an access token issued; ``POST
  /v1/projects/{project}/messages:send`` checks the bearer token and the HTTP v1 message shape (``token``,
  ``notification.title/body``, ``data`` string to string) and answers 200, or what a test queued
  (``UNREGISTERED`` 404, 429, 503, 401). A token it never issued is ``UNREGISTERED``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Injected:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class _Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = web.Application()
        self.runner: web.AppRunner | None = None
        self.problems: list[str] = []  # requests that broke the wire format (tests assert none)
        self.queued: dict[str, deque[Injected]] = defaultdict(deque)

    def inject(self, target: str, status: int, headers: dict[str, str] | None = None, body: Any = None,
               times: int = 1) -> None:
        """The next ``times`` requests to ``target`` (a subscription id, an FCM token) get this answer."""
        for _ in range(times):
            self.queued[target].append(Injected(status, headers or {}, body))

    def _injected(self, target: str) -> web.Response | None:
        if not self.queued[target]:
            return None
        answer = self.queued[target].popleft()
        body = json.dumps(answer.body) if answer.body is not None else None
        return web.Response(status=answer.status, headers=answer.headers, text=body,
                            content_type="application/json" if body else None)

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.problems.append(reason)
        return web.json_response({"error": reason}, status=status)

    async def __aenter__(self) -> Self:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Subscription:
    id: str
    endpoint: str
    p256dh: str
    auth: str
    private_key: ec.EllipticCurvePrivateKey

    def as_json(self) -> dict[str, Any]:
        """What a browser's ``PushSubscription.toJSON()`` gives."""
        return {"endpoint": self.endpoint, "expirationTime": None, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass
class PushMessage:
    subscription: str
    payload: dict[str, Any]
    headers: dict[str, str]
    vapid_claims: dict[str, Any]
    vapid_key: str


class WebPushService(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: dict[str, Subscription] = {}
        self.messages: list[PushMessage] = []
        self.app.router.add_post("/push/{id}", self._push)

    def subscribe(self) -> Subscription:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        sub_id = secrets.token_hex(8)
        subscription = Subscription(sub_id, f"{self.url}/push/{sub_id}", b64url(public), b64url(os.urandom(16)), key)
        self.subscriptions[sub_id] = subscription
        return subscription

    def _vapid(self, header: str) -> tuple[dict[str, Any], str] | str:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "Authorization scheme is not vapid"
        parts = dict(item.strip().split("=", 1) for item in params.split(",") if "=" in item)
        if "t" not in parts or "k" not in parts:
            return "vapid header without t or k"
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
            claims = jwt.decode(parts["t"], public, algorithms=["ES256"], audience=self.url,
                                options={"require": ["exp", "aud", "sub"]})
        except (ValueError, jwt.PyJWTError) as exc:
            return f"VAPID JWT rejected: {exc}"
        if claims["exp"] > time.time() + 24 * 3600:
            return "VAPID exp more than 24 hours ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "VAPID sub is not mailto: or https:"
        return claims, parts["k"]

    async def _push(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["id"]
        subscription = self.subscriptions.get(sub_id)
        if subscription is None:
            return web.Response(status=404)
        vapid = self._vapid(request.headers.get("Authorization", ""))
        if isinstance(vapid, str):
            return self._refuse(401, vapid)
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return self._refuse(400, "Content-Encoding is not aes128gcm")
        if not request.headers.get("TTL", "").isdigit():
            return self._refuse(400, "TTL header missing")
        body = await request.read()
        if len(body) > 4096:
            return self._refuse(413, "body above 4096 bytes")
        try:
            plaintext = http_ece.decrypt(body, private_key=subscription.private_key,
                                         auth_secret=unb64url(subscription.auth), version="aes128gcm")
            payload = json.loads(plaintext)
        except Exception as exc:
            return self._refuse(400, f"cannot decrypt: {exc!r}")
        injected = self._injected(sub_id)
        if injected is not None:
            return injected
        self.messages.append(PushMessage(sub_id, payload, {k.lower(): v for k, v in request.headers.items()},
                                         vapid[0], vapid[1]))
        return web.Response(status=201, headers={"Location": f"{self.url}/message/{len(self.messages)}"})


@dataclass
class FcmMessage:
    token: str
    message: dict[str, Any]


class FcmService(_Server):
    PROJECT = "atrium-test"

    def __init__(self) -> None:
        super().__init__()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = "notifier@atrium-test.iam.gserviceaccount.com"
        self.access_tokens: set[str] = set()
        self.token_requests = 0
        self.registered: set[str] = set()
        self.messages: list[FcmMessage] = []
        self.app.router.add_post("/token", self._token)
        self.app.router.add_post("/v1/projects/{project}/messages:send", self._send)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account(self, path: Path) -> Path:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        path.write_text(json.dumps({"type": "service_account", "project_id": self.PROJECT,
                                    "private_key_id": "key-1", "private_key": pem,
                                    "client_email": self.client_email, "token_uri": self.token_uri}))
        return path

    def register(self) -> str:
        """A registration token, as the FCM SDK gives an app."""
        token = f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(60)}"
        self.registered.add(token)
        return token

    def revoke_access_tokens(self) -> None:
        self.access_tokens.clear()

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._refuse(400, "wrong grant_type")
        try:
            claims = jwt.decode(str(form.get("assertion", "")), self.key.public_key(), algorithms=["RS256"],
                                audience=self.token_uri, issuer=self.client_email,
                                options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.PyJWTError as exc:
            return self._refuse(400, f"assertion rejected: {exc}")
        if "https://www.googleapis.com/auth/firebase.messaging" not in str(claims.get("scope", "")).split():
            return self._refuse(400, "assertion without the firebase.messaging scope")
        if claims["exp"] - claims["iat"] > 3600:
            return self._refuse(400, "assertion lives longer than an hour")
        token = f"ya29.{secrets.token_urlsafe(24)}"
        self.access_tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    @staticmethod
    def error(status: int, code: str, fcm_code: str | None = None) -> dict[str, Any]:
        details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}]
        return {"error": {"code": status, "message": code, "status": code, "details": details if fcm_code else []}}

    async def _send(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            return web.json_response(self.error(401, "UNAUTHENTICATED"), status=401)
        if request.match_info["project"] != self.PROJECT:
            return self._refuse(403, "wrong project")
        try:
            body = await request.json()
            message = body["message"]
            assert set(body) == {"message"}, "keys besides message"
            assert isinstance(message["token"], str), "message.token"
            assert set(message["notification"]) <= {"title", "body", "image"}, "notification keys"
            assert all(isinstance(v, str) for v in message["notification"].values()), "notification values"
            data = message.get("data", {})
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()), "data not str -> str"
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            self.problems.append(f"bad message: {exc!r}")
            return web.json_response(self.error(400, "INVALID_ARGUMENT"), status=400)
        token = message["token"]
        injected = self._injected(token)
        if injected is not None:
            return injected
        if token not in self.registered:
            return web.json_response(self.error(404, "NOT_FOUND", "UNREGISTERED"), status=404)
        self.messages.append(FcmMessage(token, message))
        return web.json_response({"name": f"projects/{self.PROJECT}/messages/{len(self.messages)}"})


def browser_subscription(endpoint: str) -> dict[str, Any]:
    """A subscription's JSON with real keys, for an endpoint no service answers (registration only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"kind": "webpush", "endpoint": endpoint, "keys": {"p256dh": b64url(public), "auth": b64url(os.urandom(16))}}


# Notifications on, for the authorization and isolation worlds: endpoints on loopback accepted, no retries.
NOTIFICATIONS_FOR_TESTS = {"enabled": True, "allow_http_endpoints": True, "allow_private_endpoints": True,
                           "max_attempts": 1, "request_timeout_s": 2.0}
