"""How the reranking stage orders candidates (knowledge/rerank.py): the reranker's cosine order and the fused
order are merged by weighted RRF over the first ``rerank.candidates``; a candidate without a reranking vector
keeps only its fused share."""

from __future__ import annotations

import numpy as np

from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.rerank import EmbeddingReranker
from atrium.knowledge.settings import RerankSettings

QUERY = np.array([1.0, 0.0], dtype=np.float32)
FUSED = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]  # best first
# Cosine with QUERY: 4 > 3 > 2 > 1, the reverse of the fused order.
VECTORS = {i: np.array([np.cos(a), np.sin(a)], dtype=np.float32)
           for i, a in zip((4, 3, 2, 1), (0.1, 0.5, 0.9, 1.3), strict=True)}


def order(weight: float, candidates: int = 30, vectors: dict[int, np.ndarray] = VECTORS, limit: int = 4) -> list[int]:
    reranker = EmbeddingReranker(HashEmbedder(dimensions=2), RerankSettings(weight=weight, candidates=candidates))
    return [chunk_id for chunk_id, _ in reranker.rerank(FUSED, QUERY, vectors, k=60, limit=limit)]


def test_weight_one_is_the_rerankers_order_and_zero_the_fused_order() -> None:
    assert order(1.0) == [4, 3, 2, 1]
    assert order(0.0) == [1, 2, 3, 4]
    assert order(1.0, limit=2) == [4, 3]


def test_between_them_the_reranker_leads_above_one_half() -> None:
    assert order(0.75)[0] == 4 and order(0.25)[0] == 1


def test_only_the_first_candidates_are_reranked() -> None:
    # With 2 candidates only chunks 1 and 2 are looked at: 2 (better cosine) first, 3 and 4 are dropped.
    assert order(1.0, candidates=2, limit=2) == [2, 1]


def test_a_candidate_without_a_vector_keeps_its_fused_share_only() -> None:
    partial = {i: v for i, v in VECTORS.items() if i != 4}
    ranked = order(0.75, vectors=partial)
    assert ranked[0] == 3 and ranked.index(4) > ranked.index(3)
    assert order(0.75, vectors={}) == [1, 2, 3, 4]
