"""The knowledge settings: the ``embedding`` section (the embedding model) and the ``knowledge`` section
(chunking, retrieval, the vector index). Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from atrium.knowledge.fusion import FusionMethod
from atrium.knowledge.web.settings import WebSettings


class EmbeddingSettings(BaseModel):
    """The embedding model (docs/configuration.md). ``onnx``: the bundled MiniLM, or ``model_path`` +
    ``tokenizer_path`` of a user's ONNX model; ``gguf``: a GGUF model through llama.cpp; ``openai``: the
    ``/embeddings`` endpoint of any OpenAI-compatible ``base_url``; ``hash``: tests. ``name`` is the model id
    each collection records: a change of it or of the dimensions re-embeds the collections in the
    background."""

    provider: Literal["onnx", "hash", "gguf", "openai"] = "onnx"
    name: str | None = Field(None, min_length=1, max_length=200)
    model_path: Path | None = None
    tokenizer_path: Path | None = None
    dimensions: int | None = Field(None, ge=8, le=4096)
    batch_size: int = Field(32, ge=1, le=512)
    threads: int = Field(1, ge=1)  # onnx: intra-op threads per batch; gguf: llama.cpp's threads
    # onnx: batches of document calls (ingestion) run side by side, one thread each (default: one per CPU);
    # question calls of at most interactive_texts texts have their own lane and never wait behind them.
    parallel: int | None = Field(None, ge=1, le=256)
    interactive_texts: int = Field(8, ge=1, le=512)
    # onnx, Linux: the ingestion threads run this many nice levels lower, so the event loop and questions get a
    # core first on a busy machine (0: the process's priority)
    bulk_nice: int = Field(10, ge=0, le=19)
    threads_batch: int = Field(2, ge=1)  # gguf: llama.cpp's prompt-processing threads
    # A user's model: what its model card says.
    pooling: Literal["auto", "mean", "cls", "last_token"] = "auto"  # auto: onnx mean (gguf: mean)
    normalize: bool = True
    max_length: int = Field(256, ge=8, le=32_768)
    output_name: str | None = None  # onnx: the output to read
    query_prefix: str = Field("", max_length=2000)  # put before questions only, e.g. "Instruct: ...\nQuery: "
    # The embedding cache (knowledge/embedders/cache.py): document vectors kept per tenant and model in the
    # database (re-ingesting a text never calls the model twice), query vectors in a per-process LRU.
    cache: bool = True
    query_cache_size: int = Field(1024, ge=0, le=1_000_000)
    # openai: an OpenAI-compatible server (the key from api_key or the variable api_key_env; never logged)
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> EmbeddingSettings:
        if self.provider == "gguf" and self.model_path is None:
            raise ValueError("embedding.provider=gguf needs embedding.model_path (a .gguf file)")
        if self.provider == "openai" and (not self.base_url or not self.model or self.dimensions is None):
            raise ValueError("embedding.provider=openai needs embedding.base_url, embedding.model and "
                             "embedding.dimensions")
        return self


class RerankSettings(BaseModel):
    """The reranking stage (knowledge/rerank.py; figures in docs/benchmarks.md, issue 14). ``enabled``:
    ``auto`` loads the reranking model when its files exist (``atrium models export-mpnet`` writes them to
    the default paths), ``on`` requires them, ``off`` never loads it. While it is loaded, ingestion also
    stores each chunk's reranking vector (about 3x the embedding work) and a background job makes those
    that existing chunks lack. ``by_default``: searches that do not say (the API's ``rerank`` field) are
    reranked."""

    enabled: Literal["auto", "on", "off"] = "auto"
    # Off: on the dev sets reranking gained nothing held out, for ~15 ms more CPU per search.
    by_default: bool = False
    # Default: <data_dir>/models/all-mpnet-base-v2-int8/{model.onnx,tokenizer.json}
    model_path: Path | None = None
    tokenizer_path: Path | None = None
    name: str = Field("all-mpnet-base-v2-int8", min_length=1, max_length=200)
    # The fused ranking's first N, re-scored; the reranker's order's weight against the fused order's
    # (1 - weight) in the final weighted RRF. Both the leave-one-project-out choice on the dev sets.
    candidates: int = Field(10, ge=1, le=200)
    weight: float = Field(0.35, ge=0.0, le=1.0)
    threads: int = Field(1, ge=1)
    max_length: int = Field(256, ge=8, le=512)


class KnowledgeSettings(BaseModel):
    # structured: token-sized chunks at paragraph/sentence boundaries; window (the default, better on the dev
    # sets): plain word windows (knowledge/chunkers.py; figures in docs/benchmarks.md, "Chunking")
    chunker: Literal["structured", "window"] = "window"
    window_words: int = Field(200, ge=8, le=2000)
    window_overlap: int = Field(40, ge=0, le=1000)
    chunk_tokens: int = Field(200, ge=32, le=2048)
    chunk_overlap: int = Field(32, ge=0, le=512)
    # Also a bound in characters: text with no boundary (no whitespace) is cut hard at this length.
    max_chunk_chars: int = Field(3000, ge=256, le=100_000)
    top_k: int = Field(5, ge=1, le=50)
    candidates: int = Field(30, ge=1, le=500)
    rrf_k: int = Field(60, ge=1)
    # SQLite keyword search: drop a query's commonest terms until the rest match at most this many rows
    # (BM25 is computed for every matching row; 0 = never drop). See knowledge/keyword.py.
    keyword_max_postings: int = Field(10_000, ge=0)
    # How hybrid search merges the vector and keyword rankings (knowledge/fusion.py); the default and its
    # weight are the best on the dev sets with the window chunker, also left one project out
    # (docs/benchmarks.md, "Issue 14 — rerank and the quality model").
    fusion: FusionMethod = "zscore"
    vector_weight: float = Field(0.55, ge=0.0, le=1.0)
    demo_collection: bool = True
    # auto: pgvector when the database is PostgreSQL, the embedded HNSW index otherwise
    vector_backend: Literal["auto", "hnsw", "pgvector"] = "auto"
    hnsw_m: int = Field(16, ge=4, le=128)
    hnsw_ef_construction: int = Field(200, ge=16)
    hnsw_ef_search: int = Field(64, ge=10)
    reconcile_interval_s: float = Field(2.0, gt=0)
    index_save_interval_s: float = Field(30.0, ge=0)
    min_relevance: float = Field(0.25, ge=-1.0, le=1.0)
    web: WebSettings = WebSettings()  # URL ingestion: limits, robots.txt, the browser (knowledge/web/)
    rerank: RerankSettings = RerankSettings()  # the reranking stage (knowledge/rerank.py)

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> KnowledgeSettings:
        if self.chunk_overlap > self.chunk_tokens // 2:
            raise ValueError("knowledge.chunk_overlap must be at most half of knowledge.chunk_tokens")
        if self.window_overlap > self.window_words // 2:
            raise ValueError("knowledge.window_overlap must be at most half of knowledge.window_words")
        return self
