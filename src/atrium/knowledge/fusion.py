"""Reciprocal rank fusion: merge several rankings of ids into one."""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60,
                           limit: int | None = None) -> list[tuple[int, float]]:
    """Fuse rankings (each best first) with RRF: ``score(id) = sum over rankings of 1 / (k + rank)``.

    Ranks start at 1; an id repeated within one ranking counts at its best rank only. Returns
    ``(id, score)`` pairs, best first, at most ``limit`` of them (``None``: all). Ties go to the id with the
    better best rank, then to the lower id, so the result is deterministic.
    (Cormack, Clarke and Büttcher, SIGIR 2009; ``k=60`` is their constant.)
    """
    if k < 0:
        raise ValueError("k must be non-negative")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], best_rank[pair[0]], pair[0]))
    return fused if limit is None else fused[:max(limit, 0)]
