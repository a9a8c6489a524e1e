"""Embedder adapters: ``OnnxEmbedder`` (CPU ONNX models) and ``HashEmbedder`` (fast, for tests)."""

from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder

__all__ = ["HashEmbedder", "OnnxEmbedder"]
