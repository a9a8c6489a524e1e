"""VectorIndex adapters: ``HnswVectorIndex`` (hnswlib, persisted) and ``PgVectorIndex`` (``pgvector.py``)."""

from atrium.knowledge.vector.hnsw import HnswVectorIndex

__all__ = ["HnswVectorIndex"]
