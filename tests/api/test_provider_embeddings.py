"""``embedding.provider = openai``: the knowledge room embeds through any OpenAI-compatible ``/v1/embeddings``
(a real local HTTP server speaking the wire format, tests/fault_upstream.py), with the key from the
environment, the process's one HTTP client, the query prefix on questions only, and the key never logged
or shown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
from atrium.knowledge.embedders.measured import MeasuredEmbedder
from atrium.settings import Settings
from tests.api.helpers import DOCS, ingest, upload, wait_job
from tests.conftest import make_settings, run_app
from tests.fault_upstream import FaultUpstream, embedding_of

KEY = "sk-embed-MUST-NEVER-BE-LOGGED-9876543210"
PREFIX = "query: "
QUERY = "refunds are issued within 14 days of a purchase"


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream() as server:
        yield server


def provider_settings(data: Path, upstream: FaultUpstream, model: str) -> Settings:
    return make_settings(data, embedding={"provider": "openai", "base_url": upstream.base_url, "model": model,
                                          "dimensions": 64, "api_key_env": "ATRIUM_TEST_EMBED_KEY",
                                          "query_prefix": PREFIX, "name": "remote-embed"})


@pytest.fixture
def settings_for(upstream: FaultUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Settings]:
    monkeypatch.setenv("ATRIUM_TEST_EMBED_KEY", KEY)
    return {model: provider_settings(tmp_path / model, upstream, model) for model in ("ok", "status-401")}


def embedding_requests(upstream: FaultUpstream) -> list[dict[str, object]]:
    return [request.body for request in upstream.requests if request.path.endswith("/embeddings")]


async def test_documents_and_questions_are_embedded_by_the_provider(
        upstream: FaultUpstream, settings_for: dict[str, Settings], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_app(settings_for["ok"]) as app:
        embedder = app.services.embedder
        assert isinstance(embedder, MeasuredEmbedder)  # the embedding-time metric wraps every adapter
        embedder = embedder.inner
        assert isinstance(embedder, OpenAIEmbeddings) and embedder.name == "remote-embed"
        assert embedder._client is app.services.http_client  # the process's one client, injected
        entry = app.services.gateway.catalogue.entry("remote-embed")
        assert entry is not None and not entry.local  # texts leave the machine: never routed as local
        await ingest(app.client)
        sent = embedding_requests(upstream)
        texts = [text for body in sent for text in body["input"]]  # type: ignore[attr-defined]
        assert sent and all(body["model"] == "ok" for body in sent)
        assert not any(text.startswith(PREFIX) for text in texts)  # documents: no prefix
        assert all(request.headers["authorization"] == f"Bearer {KEY}" for request in upstream.requests)
        response = await app.client.post("/api/v1/search/semantic",
                                          json={"query": QUERY, "mode": "vector", "limit": 3})
        assert response.status_code == 200, response.text
        assert embedding_requests(upstream)[-1]["input"] == [PREFIX + QUERY]  # the question: prefixed
        best = response.json()["results"][0]
        assert best["source"] == "billing.md"
        query, chunk = (np.asarray(embedding_of(text, 64)) for text in (PREFIX + QUERY, best["text"]))
        cosine = float(query @ chunk / (np.linalg.norm(query) * np.linalg.norm(chunk)))
        assert best["score"] == pytest.approx(cosine, abs=1e-3)  # the provider's vectors, normalised
    assert KEY not in caplog.text


async def test_a_refused_key_is_a_typed_error_that_never_shows_the_key(
        upstream: FaultUpstream, settings_for: dict[str, Settings], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_app(settings_for["status-401"]) as app:
        job = await wait_job(app.client, (await upload(app.client, {"pets.txt": DOCS["pets.txt"]}))["job_id"])
        # The file is reported as failed with the provider's typed error, the key nowhere.
        (error,) = job["result"]["errors"]
        assert error["source"] == "pets.txt" and error["code"] == "upstream_error" and KEY not in str(job)
        response = await app.client.post("/api/v1/search/semantic", json={"query": QUERY, "mode": "vector"})
        assert response.status_code >= 400
        error = response.json()["error"]
        assert set(error) >= {"code", "message", "request_id"} and KEY not in response.text
    assert upstream.count("status-401") >= 1
    assert KEY not in caplog.text
