"""VectorIndex adapters: ``HnswVectorIndex`` (hnswlib, persisted) and ``ExactVectorIndex`` (numpy)."""

from atrium.knowledge.vector.exact import ExactVectorIndex
from atrium.knowledge.vector.hnsw import HnswVectorIndex

__all__ = ["ExactVectorIndex", "HnswVectorIndex"]
