"""The Embedder contract (``test_embedder_contract``'s port tests) run over ``OpenAIEmbeddings`` against the
fault upstream's deterministic bag-of-words vectors, configured for OpenAI and for Azure OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from atrium.gateway.http_client import upstream_http_client
from atrium.gateway.ports import Embedder
from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
from atrium.gateway.providers.registry import build_provider
from atrium.settings import ProviderSettings
from tests.contract.test_embedder_contract import (  # noqa: F401  (collected here, over this module's adapters)
    test_batch_equals_one_by_one_in_input_order,
    test_count_tokens,
    test_deterministic,
    test_distinct_texts_get_distinct_vectors,
    test_embedding_does_not_block_the_event_loop,
    test_empty_input,
    test_implements_the_port,
    test_shape_and_dtype,
    test_texts_sharing_words_are_closer,
    test_vectors_are_unit_length,
)
from tests.fault_upstream import FaultUpstream


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream(embedding_dimensions=256) as server:
        yield server


@pytest.fixture(scope="module")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with upstream_http_client(httpx.Timeout(10.0)) as client:
        yield client


@pytest.fixture(params=["openai", "azure"])
def embedder(request: pytest.FixtureRequest, upstream: FaultUpstream, http_client: httpx.AsyncClient) -> Embedder:
    base_url = upstream.base_url if request.param == "openai" else upstream.root_url
    settings = ProviderSettings.model_validate({"kind": request.param, "base_url": base_url, "api_key": "sk-test-123"})
    provider = build_provider(f"test {request.param}", settings, "ok", {})
    return OpenAIEmbeddings(provider, http_client, name="upstream-embeddings", dimensions=256, batch_size=4)
