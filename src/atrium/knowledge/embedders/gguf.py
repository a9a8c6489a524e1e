"""GGUF embedding models through llama.cpp (llama-cpp-python), on the CPU.

What Qwen3-Embedding-0.6B needs (1024-d, last-token pooling, an instruction before queries), and any other
GGUF embedding model: the pooling is the model card's (``mean``, ``cls`` or ``last_token``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import numpy as np

from atrium.errors import AppError, InvalidRequest
from atrium.gateway.ports import EmbedKind, Vectors

GgufPooling = Literal["mean", "cls", "last_token"]
_POOLING_TYPES = {"mean": 1, "cls": 2, "last_token": 3}  # llama_cpp.LLAMA_POOLING_TYPE_*


class GgufEmbedder:
    """Embedder adapter for a GGUF embedding model run in process by llama.cpp.

    ``pooling`` is applied by llama.cpp over each text's tokens; vectors are L2-normalised here (unless
    ``normalize`` is off). ``dimensions`` below the model's native width keeps the leading components and
    renormalises (Matryoshka-style, as Qwen3-Embedding allows). Texts longer than ``max_length`` tokens
    are cut to fit (a few tokens are left for the special tokens the model adds). ``query_prefix`` is put
    before texts embedded with ``kind="query"``.

    One llama.cpp context serves every call, one call at a time, in a worker thread: ``n_threads`` and
    ``n_threads_batch`` are its CPU threads (prompt processing uses ``n_threads_batch``). Construction
    loads the model (seconds): from async code use ``await GgufEmbedder.create(...)``.
    """

    def __init__(self, model_path: str | Path, *, name: str | None = None, pooling: GgufPooling = "mean",
                 normalize: bool = True, dimensions: int | None = None, max_length: int = 512,
                 query_prefix: str = "", n_threads: int = 1, n_threads_batch: int = 2) -> None:
        from llama_cpp import Llama  # the optional heavy import only when this adapter is configured

        if pooling not in _POOLING_TYPES:
            raise InvalidRequest(f"GGUF embedding pooling must be one of {', '.join(_POOLING_TYPES)}.")
        if max_length < 8 or min(n_threads, n_threads_batch) < 1:
            raise InvalidRequest("max_length must be at least 8 and the thread counts positive.")
        path = Path(model_path)
        if not path.is_file():
            raise InvalidRequest(f"Embedding model not found: {path}")
        try:
            self._llama = Llama(model_path=str(path), embedding=True, pooling_type=_POOLING_TYPES[pooling],
                                n_ctx=max_length, n_batch=max_length, n_ubatch=max_length, n_threads=n_threads,
                                n_threads_batch=n_threads_batch, verbose=False)
        except Exception as exc:  # llama.cpp reports a bad file as a ValueError or RuntimeError
            raise InvalidRequest(f"Cannot load the embedding model {path.name}: {exc}") from exc
        self.name: str = name or path.stem
        self.pooling = pooling
        self.normalize = normalize
        self.query_prefix = query_prefix
        self.max_length = max_length
        self.max_input_tokens = max_length - 4
        self.native_dimensions = int(self._llama.n_embd())
        if dimensions is not None and not 0 < dimensions <= self.native_dimensions:
            raise InvalidRequest(f"Embedding dimensions must be between 1 and the model's native "
                                 f"{self.native_dimensions}, not {dimensions}.")
        self.dimensions: int = dimensions or self.native_dimensions
        self._lane: anyio.CapacityLimiter | None = None

    @classmethod
    async def create(cls, model_path: str | Path, **kwargs: Any) -> GgufEmbedder:
        """Load the model in a worker thread (the constructor's arguments)."""
        return await anyio.to_thread.run_sync(lambda: cls(model_path, **kwargs))

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        """Float32 vectors of shape ``(len(texts), dimensions)``, in the order given."""
        if kind == "query" and self.query_prefix:
            texts = [self.query_prefix + text for text in texts]
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        if self._lane is None:
            self._lane = anyio.CapacityLimiter(1)  # a llama.cpp context is not thread-safe
        return await anyio.to_thread.run_sync(self.embed_sync, list(texts), limiter=self._lane)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The blocking work behind ``embed`` (one caller at a time)."""
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        try:
            rows = self._llama.embed([self._fit(text) for text in texts], normalize=False, truncate=True)
        except Exception as exc:
            raise AppError("The embedding model failed.", code="embedding_failed") from exc
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)[:, :self.dimensions]
        if not self.normalize:
            return vectors
        return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens."""
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=False))

    def _fit(self, text: str) -> str:
        """``text`` cut to ``max_input_tokens`` tokens (an empty text becomes one space: llama.cpp needs a
        token to pool)."""
        tokens = self._llama.tokenize(text.encode(), add_bos=False, special=False)
        if len(tokens) > self.max_input_tokens:
            text = self._llama.detokenize(tokens[:self.max_input_tokens]).decode(errors="ignore")
        return text or " "
