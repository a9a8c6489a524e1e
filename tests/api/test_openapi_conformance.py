"""Schemathesis against the app (embedded profile, in process, authenticated as the admin): every answer
of the JSON routes must be a status the spec lists for the route, in a content type it lists, matching the
documented schema, and never a 5xx.

Left out, and why:
* streaming answers (``stream: true`` on ``/api/v1/chat/ask``, ``/v1/chat/completions``, ``/v1/messages``):
  their body is Server-Sent Events, which the spec documents as ``text/event-stream`` only; their events
  have their own tests. The same routes are checked with ``stream`` false or absent.
* ``/ws`` and ``/metrics``: not in the spec (a WebSocket; Prometheus text).

Cases per route are bounded (``MAX_EXAMPLES``) so the run stays well under a minute on a small machine.
Random input rarely reaches a full answer (a search hit, a stored conversation), so a second test sends
known-good requests, after some data is made, and checks their answers the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import HOST, get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from tests.api.artifact_helpers import artifact_or_grounded
from tests.conftest import ADMIN_KEY, make_settings

MAX_EXAMPLES = 15
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
STREAMING = {"/api/v1/chat/ask", "/v1/chat/completions", "/v1/messages"}


DOCUMENT = (b"# Refunds\n\nRefunds are issued within 14 days of a request, to the card that paid.\n\n"
            b"## Exceptions\n\nGift cards are not refunded.\n")


def seed(app: Any) -> None:
    """Something for the list and search routes to answer with: a document, a conversation, a query."""
    with get_client(app) as client:
        client.headers.update(AUTH)
        base = f"http://{HOST}"
        upload = client.post(f"{base}/api/v1/documents", data={"collection": "handbook"},
                             files=[("files", ("refunds.md", DOCUMENT, "text/markdown"))])
        assert upload.status_code == 202, upload.text
        deadline = time.monotonic() + 30
        while client.get(f"{base}/api/v1/jobs/{upload.json()['job_id']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the ingestion job did not finish"
            time.sleep(0.05)
        assert client.post(f"{base}/api/v1/chat/ask", json={"message": "When are refunds issued?"}).ok
        assert client.post(f"{base}/api/v1/query", json={"question": "Are gift cards refunded?"}).ok


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    """A fresh app per test: schemathesis runs its lifespan on its own event loop thread, and ends it after
    the test (with it the injected model, which is closed for good)."""
    app = create_app(make_settings(tmp_path / "data"), chat_model=FakeChatModel(answer=artifact_or_grounded))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seed(app)
    yield schema
    shutdown_lifespans()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,  # the same cases every run
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
def test_responses_conform_to_the_spec(case: Any) -> None:
    streaming = case.path in STREAMING and isinstance(case.body, dict) and case.body.get("stream") is True
    assume(not streaming)
    case.call_and_validate(headers=AUTH, checks=CHECKS)


# Known-good requests: their answers carry every field the response schemas describe.
KNOWN_GOOD = [
    ("POST", "/api/v1/search/semantic", {"query": "refunds", "mode": "vector", "limit": 3}),
    ("POST", "/api/v1/search/semantic", {"query": "gift cards", "mode": "keyword"}),
    ("POST", "/api/v1/chat/ask", {"message": "When are refunds issued?"}),
    ("POST", "/api/v1/query", {"question": "Are gift cards refunded?"}),
    ("POST", "/api/v1/query", {"question": "Are gift cards refunded?", "wait": False}),
    ("GET", "/api/v1/documents", None),
    ("GET", "/api/v1/collections", None),
    ("GET", "/api/v1/conversations", None),
    ("GET", "/api/v1/sync", None),
    ("GET", "/api/v1/admin/conversations", None),
    ("GET", "/api/v1/admin/org", None),
    ("GET", "/api/v1/admin/users", None),
    ("GET", "/api/v1/admin/keys", None),
    ("GET", "/api/v1/admin/audit", None),
    ("GET", "/api/v1/admin/gateway/breakers", None),
    ("GET", "/api/v1/admin/policy", None),
    ("GET", "/api/v1/budget", None),
    ("GET", "/api/v1/analytics/user", None),
    ("GET", "/api/v1/analytics/system", None),
    ("PUT", "/api/v1/admin/budgets", {"scope": "org", "period": "month", "limit_usd": "100"}),
    ("GET", "/api/v1/admin/budgets", None),
    ("POST", "/api/v1/admin/divisions", {"name": "Support"}),
    ("POST", "/api/v1/admin/users", {"email": "ada@example.com", "name": "Ada", "password": "correct horse 1"}),
    ("POST", "/api/v1/admin/keys", {"name": "ci", "role": "member"}),
    ("POST", "/api/v1/admin/invitations", {"email": "bob@example.com"}),
    ("GET", "/api/v1/admin/invitations", None),
    ("POST", "/api/v1/auth/token", {"email": "ada@example.com", "password": "correct horse 1"}),
    ("POST", "/api/v1/artifacts", {"kind": "table", "title": "Stock", "content": {"columns": ["item", "qty"],
                                                                                  "rows": [["pens", 2]]}}),
    ("POST", "/api/v1/artifacts/generate", {"prompt": "A release checklist", "kind": "checklist"}),
    ("GET", "/api/v1/artifacts", None),
    ("POST", "/api/v1/artifacts/search", {"query": "release checklist"}),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}),
    ("POST", "/v1/messages", {"model": "fake", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}),
    ("POST", "/v1/embeddings", {"model": "(the embedder)", "input": ["refunds", "gift cards"]}),
    ("POST", "/assistants/search", {"graph_id": "echo"}),
    ("POST", "/threads", {"metadata": {"topic": "refunds"}}),
    ("POST", "/threads/search", {"metadata": {"topic": "refunds"}, "limit": 5}),
    ("GET", "/health", None),
    ("GET", "/ready", None),
]


def test_known_answers_conform_to_the_spec(api_schema: Any) -> None:
    with get_client(api_schema.app) as client:
        models = client.get(f"http://{HOST}/v1/models", headers=AUTH).json()["data"]
    embedder = next(model["id"] for model in models if model["kind"] == "embedding")
    failures = []
    for method, path, body in KNOWN_GOOD:
        if body is not None and body.get("model") == "(the embedder)":
            body = {**body, "model": embedder}
        operation = api_schema[path][method]
        kwargs: dict[str, Any] = {"body": body, "media_type": "application/json"} if body is not None else {}
        case = operation.Case(**kwargs)
        try:
            response = case.call_and_validate(headers=AUTH, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # report them all at once
            failures.append(f"{method} {path}: {exc}")
            continue
        if not 200 <= response.status_code < 300:
            failures.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
    assert not failures, "\n\n".join(failures)
