"""The ``Embedder`` port (gateway/ports.py) over OpenAI's embeddings endpoint (``POST {base}/embeddings``).

Serves OpenAI, Azure OpenAI (through its ``Provider``: deployment path, ``api-version``, ``api-key``),
vLLM, Ollama and TGI. Texts are sent in batches; the answer's rows are put back in input order by their
``index``, checked against the configured ``dimensions`` and L2-normalised to float32. Decoding a large
answer is CPU work and runs in a worker thread.

Blank texts are never sent (OpenAI refuses empty input): they get a fixed unit vector (the first axis), so
every row stays unit-length. Failures raise the typed errors of :mod:`atrium.errors` (``rate_limited``
with ``retry_after``, ``model_unavailable``, ``model_timeout``, ``upstream_error``), with messages that
name the provider, never its URL or key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import anyio.to_thread
import httpx
import numpy as np

from atrium.errors import GatewayError
from atrium.gateway.ports import EmbedKind, Vectors
from atrium.gateway.providers.base import Provider, retry_after_seconds, transport_error
from atrium.gateway.providers.openai_format import openai_error


class EmbeddingResult(NamedTuple):
    """Vectors plus the input tokens they cost: the upstream's count when it reported usage, else
    the sum of :meth:`OpenAIEmbeddings.count_tokens` over the texts sent (``estimated`` then)."""

    vectors: Vectors
    prompt_tokens: int
    estimated: bool = False


class OpenAIEmbeddings:
    """Embedder adapter for the OpenAI embeddings format.

    ``dimensions`` is the width of the vectors the index stores; an upstream answering with another width
    is an error, unless ``send_dimensions`` asks it to shorten its vectors (OpenAI's ``text-embedding-3-*``
    accept a ``dimensions`` parameter). ``batch_size`` texts go in one request. ``client`` is owned by the
    caller; ``timeout`` overrides its timeout per request. ``query_prefix`` (an instruction) is put before
    texts embedded as queries.
    """

    def __init__(
        self,
        provider: Provider,
        client: httpx.AsyncClient,
        *,
        name: str,
        dimensions: int,
        send_dimensions: bool = False,
        batch_size: int = 256,
        timeout: httpx.Timeout | None = None,
        query_prefix: str = "",
    ) -> None:
        if dimensions < 1 or batch_size < 1:
            raise ValueError("dimensions and batch_size must be positive")
        self.name = name
        self.dimensions = dimensions
        self._provider = provider
        self._client = client
        self._send_dimensions = send_dimensions
        self._batch_size = batch_size
        self._timeout = timeout
        self.query_prefix = query_prefix

    @property
    def provider(self) -> Provider:
        return self._provider

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        """Normalised float32 vectors of shape ``(len(texts), dimensions)``, in input order; query texts get
        ``query_prefix`` first."""
        if kind == "query" and self.query_prefix:
            texts = [self.query_prefix + text for text in texts]
        return (await self.embed_with_usage(texts)).vectors

    async def embed_with_usage(self, texts: Sequence[str]) -> EmbeddingResult:
        """Like :meth:`embed`, plus the tokens the call cost (for metering)."""
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        sent = [(row, text) for row, text in enumerate(texts) if text.strip()]
        vectors[[row for row, text in enumerate(texts) if not text.strip()], 0] = 1.0
        tokens, estimated = 0, False
        for start in range(0, len(sent), self._batch_size):
            batch = sent[start : start + self._batch_size]
            rows, reported = await self._request([text for _, text in batch])
            vectors[[row for row, _ in batch]] = rows
            if reported is None:
                reported, estimated = sum(self.count_tokens(text) for _, text in batch), True
            tokens += reported
        return EmbeddingResult(vectors, tokens, estimated)

    def count_tokens(self, text: str) -> int:
        """An estimate of the upstream's token count: about 4 characters a token, at least one per word."""
        return max(len(text.split()), len(text) // 4)

    async def _request(self, texts: list[str]) -> tuple[Vectors, int | None]:
        provider = self._provider
        body: dict[str, Any] = {"model": provider.model, "input": texts}
        if self._send_dimensions:
            body["dimensions"] = self.dimensions
        timeout = self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT
        try:
            response = await self._client.post(
                provider.url("embeddings"), json=body, headers=provider.request_headers(), timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(provider, exc) from exc
        if response.status_code >= 400:
            try:
                payload = json.loads(response.content)
            except ValueError:
                payload = None
            raise openai_error(provider, payload if isinstance(payload, dict) else {},
                               status=response.status_code, retry_after=retry_after_seconds(response.headers))
        return await anyio.to_thread.run_sync(_decode, provider.name, response.content, len(texts), self.dimensions)


def _decode(provider: str, raw: bytes, count: int, dimensions: int) -> tuple[Vectors, int | None]:
    """Rows in input order, normalised; the reported prompt tokens. Runs in a worker thread."""
    malformed = GatewayError(f"{provider} sent a malformed embeddings response.", retryable=True)
    try:
        payload = json.loads(raw)
        data = sorted(payload["data"], key=lambda item: item["index"])
        rows = [_row(item["embedding"]) for item in data]
        matrix = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise malformed from None
    if len(data) != count or [item["index"] for item in data] != list(range(count)) or matrix.ndim != 2:
        raise malformed
    if matrix.shape[1] != dimensions:
        raise GatewayError(
            f"{provider} returned {matrix.shape[1]}-dimensional vectors; the model is configured for {dimensions}."
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.isfinite(matrix).all() or (norms == 0).any():
        raise GatewayError(f"{provider} returned a zero or non-finite vector.")
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return matrix / norms, tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


def _row(embedding: object) -> object:
    if isinstance(embedding, str):  # encoding_format "base64": little-endian float32
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return embedding
