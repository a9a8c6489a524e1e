"""Fusion: merge the vector and keyword rankings of one search into one ranking.

Three methods (``knowledge.fusion``):

- ``rrf``: reciprocal rank fusion with equal weights (Cormack, Clarke and Büttcher, SIGIR 2009).
- ``weighted_rrf``: RRF with the vector ranking weighted ``vector_weight`` and the keyword ranking
  ``1 - vector_weight``.
- ``convex``: a convex combination of the two rankings' scores, each min-max normalised over its own
  candidates (cosine similarity and BM25 are on unrelated scales); a candidate missing from a ranking gets 0
  from it.
- ``zscore``: a convex combination of the two rankings' scores, each standardised over its own candidates
  (``(score - mean) / standard deviation``); a candidate missing from a ranking gets that ranking's lowest
  standardised score.

Equal-weight RRF lets a weak keyword ranking pull a strong vector hit down (issue 14); the weighted
methods let the better signal lead. Every method returns ``(id, score)`` pairs, best first, deterministic
on ties: the better best rank in either input, then the lower id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

FusionMethod = Literal["rrf", "weighted_rrf", "convex", "zscore"]
FUSION_METHODS: tuple[FusionMethod, ...] = ("rrf", "weighted_rrf", "convex", "zscore")


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60, limit: int | None = None,
                           weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Fuse rankings (each best first) with RRF: ``score(id) = sum over rankings of w / (k + rank)``.

    Ranks start at 1; an id repeated within one ranking counts at its best rank only. ``weights``: one per
    ranking (default 1 each). Returns ``(id, score)`` pairs, best first, at most ``limit`` of them (``None``:
    all). Ties go to the id with the better best rank, then to the lower id, so the result is deterministic.
    (``k=60`` is the paper's constant.)
    """
    if k < 0:
        raise ValueError("k must be non-negative")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError("one non-negative weight per ranking")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    return _ordered(scores, best_rank, limit)


def convex_fusion(rankings: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float],
                  limit: int | None = None) -> list[tuple[int, float]]:
    """``score(id) = sum over rankings of w * minmax(score)``, each ranking's scores (higher is better)
    scaled to [0, 1] over its own candidates; a ranking whose scores are all equal gives each of them 1.
    An id repeated within one ranking counts at its best score. Ordered as ``reciprocal_rank_fusion``."""
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError("one non-negative weight per ranking")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if not ranking:
            continue
        best: dict[int, float] = {}
        for rank, (item, score) in enumerate(ranking, start=1):
            best[item] = max(best.get(item, score), score)
            best_rank[item] = min(best_rank.get(item, rank), rank)
        low, high = min(best.values()), max(best.values())
        span = high - low
        for item, score in best.items():
            normalised = (score - low) / span if span > 0 else 1.0
            scores[item] = scores.get(item, 0.0) + weight * normalised
    return _ordered(scores, best_rank, limit)


def zscore_fusion(rankings: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float],
                  limit: int | None = None) -> list[tuple[int, float]]:
    """``score(id) = sum over rankings of w * z(score)``, each ranking's scores (higher is better) standardised
    over its own candidates; an id missing from a ranking gets that ranking's lowest standardised score; a
    ranking whose scores are all equal gives each of them 0. An id repeated within one ranking counts at its
    best score. Ordered as ``reciprocal_rank_fusion``."""
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError("one non-negative weight per ranking")
    best_rank: dict[int, int] = {}
    standardised: list[tuple[dict[int, float], float, float]] = []
    for ranking, weight in zip(rankings, weights, strict=True):
        best: dict[int, float] = {}
        for rank, (item, score) in enumerate(ranking, start=1):
            best[item] = max(best.get(item, score), score)
            best_rank[item] = min(best_rank.get(item, rank), rank)
        if not best:
            continue
        mean = sum(best.values()) / len(best)
        spread = (sum((score - mean) ** 2 for score in best.values()) / len(best)) ** 0.5
        z = {item: (score - mean) / spread if spread > 0 else 0.0 for item, score in best.items()}
        standardised.append((z, min(z.values()), weight))
    scores = {item: sum(weight * z.get(item, floor) for z, floor, weight in standardised) for item in best_rank}
    return _ordered(scores, best_rank, limit)


def fuse(vector: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float]], *,
         method: FusionMethod = "rrf", vector_weight: float = 0.5, k: int = 60,
         limit: int | None = None) -> list[tuple[int, float]]:
    """Fuse a vector and a keyword ranking (``(id, score)`` pairs, best first) with ``method``.
    ``vector_weight`` (0..1) is ignored by plain ``rrf``; the keyword ranking weighs ``1 - vector_weight``."""
    if not 0.0 <= vector_weight <= 1.0:
        raise ValueError("vector_weight must be between 0 and 1")
    if method == "convex":
        return convex_fusion([vector, keyword], [vector_weight, 1.0 - vector_weight], limit)
    if method == "zscore":
        return zscore_fusion([vector, keyword], [vector_weight, 1.0 - vector_weight], limit)
    ids = [[item for item, _ in vector], [item for item, _ in keyword]]
    if method == "weighted_rrf":
        return reciprocal_rank_fusion(ids, k=k, limit=limit, weights=[vector_weight, 1.0 - vector_weight])
    if method == "rrf":
        return reciprocal_rank_fusion(ids, k=k, limit=limit)
    raise ValueError(f"unknown fusion method {method!r}")


def _ordered(scores: dict[int, float], best_rank: dict[int, int], limit: int | None) -> list[tuple[int, float]]:
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], best_rank[pair[0]], pair[0]))
    return fused if limit is None else fused[:max(limit, 0)]
