"""A deterministic, dependency-free embedder for fast tests."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

import numpy as np

from atrium.gateway.ports import EmbedKind, Vectors

_WORD = re.compile(r"\w+")
_EMPTY_FEATURE = "\x00empty"


class HashEmbedder:
    """Embedder adapter that hashes lowercased word unigrams and bigrams into ``dimensions`` buckets.

    Texts sharing words get close vectors; the same text always gets the same vector, in any process
    (blake2b, not Python's salted ``hash``). Each feature adds +1 or -1 (a second hash bit) to its bucket, so
    collisions cancel out instead of piling up. A text without words maps to one fixed vector. It has no
    notion of meaning beyond shared words: use it where a test needs a real, fast adapter, not semantics.
    ``count_tokens`` counts whitespace-separated words. ``query_prefix`` is put before query texts.
    """

    def __init__(self, dimensions: int = 384, *, name: str = "hash-bow", query_prefix: str = "") -> None:
        if dimensions < 1:
            raise ValueError("dimensions must be positive")
        self.name = name
        self.dimensions = dimensions
        self.query_prefix = query_prefix
        self.max_input_tokens = 1_000_000

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        """Normalised float32 vectors of shape ``(len(texts), dimensions)`` (cheap: computed inline)."""
        if kind == "query" and self.query_prefix:
            texts = [self.query_prefix + text for text in texts]
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in _features(text):
                digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
                vectors[row, digest % self.dimensions] += 1.0 if digest >> 63 else -1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # Colliding features can cancel to zero: fall back to the empty-text vector so output stays unit-length.
        zero = norms[:, 0] == 0
        if zero.any():
            vectors[zero] = self._empty_vector()
            norms[zero] = 1.0
        return vectors / norms

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _empty_vector(self) -> Vectors:
        digest = int.from_bytes(hashlib.blake2b(_EMPTY_FEATURE.encode(), digest_size=8).digest(), "little")
        vector = np.zeros(self.dimensions, dtype=np.float32)
        vector[digest % self.dimensions] = 1.0
        return vector


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{first} {second}" for first, second in itertools.pairwise(words)]
