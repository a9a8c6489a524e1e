"""An Embedder wrapper that times every call into ``atrium_embedding_seconds{model,kind}`` and counts the
texts (``telemetry/metrics.py``): ingestion, re-embedding and query embedding all pass through it.

The container wraps the knowledge room's embedder with it; the gateway keeps the bare adapter (its
``/v1/embeddings`` calls are timed by ``Gateway.embed``), so no call is counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from atrium.gateway.ports import Embedder, EmbedKind, Vectors
from atrium.telemetry.metrics import Metrics


class MeasuredEmbedder:
    """Embedder adapter over another one (its name, dimensions and token count), timed."""

    def __init__(self, inner: Embedder, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimensions = inner.dimensions
        self._metrics = metrics

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        started = time.perf_counter()
        vectors = await self.inner.embed(texts, kind=kind)
        self._metrics.observe_embedding(self.name, kind, len(texts), time.perf_counter() - started)
        return vectors

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def __getattr__(self, name: str) -> Any:  # what an adapter offers beyond the port (max_input_tokens, ...)
        return getattr(self.inner, name)
