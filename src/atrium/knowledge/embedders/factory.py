"""From the ``embedding`` settings to an ``Embedder`` adapter (one per process, built at start-up)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import httpx

from atrium.gateway.ports import Embedder
from atrium.knowledge.settings import EmbeddingSettings


def build_embedder(config: EmbeddingSettings, http_client: httpx.AsyncClient | None = None, *,
                   environ: Mapping[str, str] | None = None) -> Embedder:
    """The configured adapter. Loading a model blocks (run it in a worker thread). ``http_client`` (the
    process's one client) serves the ``openai`` provider; ``environ`` holds ``api_key_env``'s variable."""
    if config.provider == "hash":
        from atrium.knowledge.embedders.fake import HashEmbedder

        return HashEmbedder(dimensions=config.dimensions or 384, name=config.name or "hash-bow",
                            query_prefix=config.query_prefix)
    if config.provider == "gguf":
        from atrium.knowledge.embedders.gguf import GgufEmbedder

        assert config.model_path is not None  # the settings' validator
        return GgufEmbedder(config.model_path, name=config.name,
                            pooling="mean" if config.pooling == "auto" else config.pooling,
                            normalize=config.normalize, dimensions=config.dimensions, max_length=config.max_length,
                            query_prefix=config.query_prefix, n_threads=config.threads,
                            n_threads_batch=config.threads_batch)
    if config.provider == "openai":
        return _openai(config, http_client, os.environ if environ is None else environ)
    from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder

    return OnnxEmbedder(model_path=config.model_path, tokenizer_path=config.tokenizer_path, name=config.name,
                        dimensions=config.dimensions, batch_size=config.batch_size,
                        intra_op_num_threads=config.threads, max_concurrency=config.parallel,
                        interactive_texts=config.interactive_texts, bulk_nice=config.bulk_nice,
                        max_length=config.max_length,
                        pooling=config.pooling, normalize=config.normalize, output_name=config.output_name,
                        query_prefix=config.query_prefix)


def _openai(config: EmbeddingSettings, http_client: httpx.AsyncClient | None,
            environ: Mapping[str, str]) -> Embedder:
    from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
    from atrium.gateway.providers.registry import build_provider
    from atrium.gateway.settings import ProviderSettings

    if http_client is None:
        raise ValueError("embedding.provider=openai needs the process's HTTP client")
    assert config.model is not None and config.dimensions is not None  # the settings' validator
    provider = build_provider("embedding", ProviderSettings(kind="openai", base_url=config.base_url,
                                                            api_key=config.api_key, api_key_env=config.api_key_env),
                              config.model, environ)
    return OpenAIEmbeddings(provider, http_client, name=config.name or config.model, dimensions=config.dimensions,
                            batch_size=config.batch_size, query_prefix=config.query_prefix)


# The settings that shape a vector (not how fast it is made): part of the embedding cache's key.
_SHAPING = ("provider", "name", "dimensions", "pooling", "normalize", "max_length", "output_name", "query_prefix",
            "base_url", "model")
_FILE_SAMPLE = 1 << 20


def model_fingerprint(config: EmbeddingSettings, embedder: Embedder) -> str:
    """32 hex digits naming the model and its version: the adapter's name and width, the settings that shape
    its vectors, and its model and tokenizer files (size and sha256 of their first and last MiB: a
    replaced file with the same name is another model). Blocking (reads files)."""
    shaping = config.model_dump(mode="json", include=set(_SHAPING))
    files = [config.model_path, config.tokenizer_path]
    if config.provider == "onnx" and config.model_path is None:
        from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths

        files = list(bundled_model_paths())
    identity = {"embedder": [type(embedder).__name__, embedder.name, embedder.dimensions], "settings": shaping,
                "files": [_file_identity(path) for path in files if path is not None]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _file_identity(path: Path) -> list[object]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        digest.update(handle.read(_FILE_SAMPLE))
        if size > _FILE_SAMPLE:
            handle.seek(max(size - _FILE_SAMPLE, _FILE_SAMPLE))
            digest.update(handle.read(_FILE_SAMPLE))
    return [path.name, size, digest.hexdigest()]
