"""OpenAIEmbeddings against the fault upstream: normalised rows in input order across batches, the
upstream's usage for metering, blank texts never sent, width checks, and typed errors without the key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from blockbuster import BlockBuster

from atrium.errors import (
    ContextLengthExceeded,
    GatewayError,
    ModelTimeout,
    ModelUnavailable,
    UpstreamRateLimited,
)
from atrium.gateway.providers.base import Provider
from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
from tests.fault_upstream import FaultUpstream, embedding_of

API_KEY = "sk-embed-THIS-MUST-NEVER-LEAK-0123456789"
TEXTS = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota"]


@pytest.fixture(autouse=True)
def _no_blocking_calls(blockbuster: BlockBuster) -> Iterator[None]:
    yield


def embedder_for(
    upstream: FaultUpstream, client: httpx.AsyncClient, model: str = "ok", **kwargs: object
) -> OpenAIEmbeddings:
    provider = Provider(name="embedco", base_url=upstream.base_url, model=model, api_key=API_KEY)
    options: dict[str, object] = {"dimensions": 64, **kwargs}
    return OpenAIEmbeddings(provider, client, name="embed-model", **options)  # type: ignore[arg-type]


def expected(texts: list[str], dimensions: int = 64) -> np.ndarray:
    rows = np.asarray([embedding_of(text, dimensions) for text in texts], dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def test_rows_are_normalised_in_input_order_across_batches(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    before = len(upstream.requests)
    vectors, tokens, estimated = await embedder_for(upstream, client, batch_size=2).embed_with_usage(TEXTS)
    assert len(upstream.requests) - before == 3  # 2 + 2 + 1
    assert vectors.dtype == np.float32 and vectors.shape == (5, 64)
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)
    assert (tokens, estimated) == (9, False)  # the upstream's usage (words), summed over the batches
    body = upstream.requests[-1].body
    assert body == {"model": "ok", "input": ["theta iota"]}
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


async def test_without_upstream_usage_the_tokens_are_counted_and_marked_estimated(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    embedder = embedder_for(upstream, client, model="no-usage")
    _, tokens, estimated = await embedder.embed_with_usage(TEXTS)
    assert estimated and tokens == sum(embedder.count_tokens(text) for text in TEXTS) > 0


async def test_blank_texts_are_not_sent(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    vectors = await embedder_for(upstream, client).embed(["", "alpha beta", "   "])
    assert upstream.requests[-1].body["input"] == ["alpha beta"]
    np.testing.assert_allclose(vectors[1], expected(["alpha beta"])[0], atol=1e-6)
    assert vectors[0][0] == vectors[2][0] == 1.0
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    before = len(upstream.requests)
    assert (await embedder_for(upstream, client).embed([])).shape == (0, 64)
    assert len(upstream.requests) == before


async def test_dimensions_are_sent_when_asked(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    vectors = await embedder_for(upstream, client, dimensions=32, send_dimensions=True).embed(["alpha"])
    assert vectors.shape == (1, 32) and upstream.requests[-1].body["dimensions"] == 32


async def test_a_wrong_width_is_an_error(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    with pytest.raises(GatewayError, match="64-dimensional") as raised:
        await embedder_for(upstream, client, dimensions=128).embed(["alpha"])
    assert not raised.value.retryable


async def test_azure_layout(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    provider = Provider(name="az", base_url=upstream.root_url, model="ok", api_key=API_KEY,
                        paths={"embeddings": "openai/deployments/{model}/embeddings"},
                        query={"api-version": "2024-10-21"}, auth=("api-key", ""))
    vectors = await OpenAIEmbeddings(provider, client, name="e", dimensions=64).embed(["alpha beta"])
    np.testing.assert_allclose(vectors, expected(["alpha beta"]), atol=1e-6)
    recorded = upstream.requests[-1]
    assert (recorded.path, recorded.query, recorded.headers["api-key"]) == (
        "/openai/deployments/ok/embeddings", {"api-version": "2024-10-21"}, API_KEY
    )


@pytest.mark.parametrize(("model", "error", "retryable"), [
    ("status-429", UpstreamRateLimited, True),
    ("status-503", ModelUnavailable, True),
    ("status-500", GatewayError, True),
    ("status-401", GatewayError, False),
    ("status-400", GatewayError, False),
    ("context-too-long", ContextLengthExceeded, False),
    ("malformed", GatewayError, True),
    ("reset", GatewayError, True),
])  # fmt: skip
async def test_faults_raise_typed_errors(
    upstream: FaultUpstream, client: httpx.AsyncClient, model: str, error: type[GatewayError], retryable: bool
) -> None:
    with pytest.raises(GatewayError) as raised:
        await embedder_for(upstream, client, model).embed(["alpha"])
    assert type(raised.value) is error and raised.value.retryable is retryable
    assert "embedco" in raised.value.message
    assert API_KEY not in raised.value.message and "THIS-MUST-NEVER-LEAK" not in raised.value.message


async def test_rate_limit_retry_after(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    with pytest.raises(UpstreamRateLimited) as raised:
        await embedder_for(upstream, client, "rate-limited-ms").embed(["alpha"])
    assert raised.value.retry_after == 1.5


async def test_stall_times_out(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    with pytest.raises(ModelTimeout):
        await embedder_for(upstream, client, "stall", timeout=httpx.Timeout(0.3)).embed(["alpha"])


async def test_fail_first_then_answers(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    embedder = embedder_for(upstream, client, "fail-first-1")
    with pytest.raises(ModelUnavailable):
        await embedder.embed(["alpha"])
    assert (await embedder.embed(["alpha"])).shape == (1, 64)
    assert upstream.count("fail-first-1") == 2


def test_count_tokens_is_an_estimate(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    embedder = embedder_for(upstream, client)
    assert embedder.count_tokens("") == 0
    assert embedder.count_tokens("one two three") == 3
    assert embedder.count_tokens("x" * 400) == 100
