"""Fusion of the vector and keyword rankings: RRF, weighted RRF, min-max convex and z-score."""

from __future__ import annotations

import pytest

from atrium.knowledge.fusion import FusionMethod, fuse, reciprocal_rank_fusion


def test_single_ranking_keeps_its_order_and_scores() -> None:
    fused = reciprocal_rank_fusion([[7, 3, 9]], k=60)
    assert [item for item, _ in fused] == [7, 3, 9]
    assert [score for _, score in fused] == pytest.approx([1 / 61, 1 / 62, 1 / 63])


def test_scores_add_up_across_rankings() -> None:
    fused = dict(reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=10))
    assert fused[1] == pytest.approx(1 / 11 + 1 / 12)
    assert fused[3] == pytest.approx(1 / 13 + 1 / 11)
    assert fused[2] == pytest.approx(1 / 12)
    assert fused[4] == pytest.approx(1 / 13)


def test_agreement_beats_a_single_first_place() -> None:
    # 5 is second in both; 1 and 9 each top one ranking only.
    fused = reciprocal_rank_fusion([[1, 5, 2], [9, 5, 3]])
    assert fused[0][0] == 5


def test_limit() -> None:
    rankings = [[1, 2, 3, 4], [4, 3, 2, 1]]
    assert len(reciprocal_rank_fusion(rankings, limit=2)) == 2
    assert len(reciprocal_rank_fusion(rankings)) == 4
    assert reciprocal_rank_fusion(rankings, limit=0) == []


def test_duplicates_within_one_ranking_count_once() -> None:
    fused = dict(reciprocal_rank_fusion([[1, 1, 1, 2]], k=60))
    assert fused[1] == pytest.approx(1 / 61)
    assert fused[2] == pytest.approx(1 / 64)


def test_empty_rankings() -> None:
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], []]) == []
    assert reciprocal_rank_fusion([[], [8]]) == [(8, pytest.approx(1 / 61))]


def test_ties_are_deterministic() -> None:
    # 1 and 2 tie on score (first in one ranking each): the lower id comes first, whatever the input order.
    assert [item for item, _ in reciprocal_rank_fusion([[2], [1]])] == [1, 2]
    assert [item for item, _ in reciprocal_rank_fusion([[1], [2]])] == [1, 2]


def test_k_trades_top_ranks_against_agreement() -> None:
    # 2 is third in both rankings; 1 is first in one. score(2) = 2/(k+3), score(1) = 1/(k+1).
    rankings = [[1, 8, 2], [3, 9, 2]]
    assert reciprocal_rank_fusion(rankings, k=0)[0][0] == 1
    assert reciprocal_rank_fusion(rankings, k=60)[0][0] == 2


def test_negative_k_is_refused() -> None:
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], k=-1)


# Weighted and score-normalised fusion of a vector and a keyword ranking (issue 14).

def test_a_weak_keyword_ranking_cannot_push_down_a_strong_vector_hit() -> None:
    # 1 is the clear vector winner; the keyword ranking knows nothing of it and ranks 3 and 2 almost alike.
    # Equal-weight RRF puts a chunk found by both (3) first; the score-normalised fusion sees that 1 is far ahead on
    # the vector side and 2 barely distinguished on the keyword side, and keeps 1 first.
    vector = [(1, 0.91), (2, 0.52), (3, 0.50), (4, 0.49)]
    keyword = [(3, 2.1), (2, 2.0), (9, 1.9)]
    assert fuse(vector, keyword, method="rrf", limit=1)[0][0] == 3
    assert fuse(vector, keyword, method="convex", vector_weight=0.7, limit=1)[0][0] == 1
    # Rank-based fusion cannot see the margin: second in both rankings (1/62 in all) beats first in the vector
    # one unless the vector weight is above 61/62.
    assert fuse(vector, keyword, method="weighted_rrf", vector_weight=0.8, limit=1)[0][0] != 1
    assert fuse(vector, keyword, method="weighted_rrf", vector_weight=0.99, limit=1)[0][0] == 1


def test_weights_are_respected() -> None:
    vector = [(1, 0.9), (2, 0.1)]
    keyword = [(2, 9.0), (1, 1.0)]
    for method in ("weighted_rrf", "convex"):
        assert [i for i, _ in fuse(vector, keyword, method=method, vector_weight=1.0)] == [1, 2]
        assert [i for i, _ in fuse(vector, keyword, method=method, vector_weight=0.0)] == [2, 1]
        assert [i for i, _ in fuse(vector, keyword, method=method, vector_weight=0.9)] == [1, 2]
        assert [i for i, _ in fuse(vector, keyword, method=method, vector_weight=0.1)] == [2, 1]


def test_weighted_rrf_scores() -> None:
    fused = dict(fuse([(1, 0.9), (2, 0.8)], [(2, 5.0)], method="weighted_rrf", vector_weight=0.75, k=10))
    assert fused[1] == pytest.approx(0.75 / 11)
    assert fused[2] == pytest.approx(0.75 / 12 + 0.25 / 11)


def test_convex_scores_are_min_max_normalised_per_ranking() -> None:
    # Vector 0.8..0.4 -> 1..0; keyword 12..2 -> 1..0 (BM25's scale must not matter).
    fused = dict(fuse([(1, 0.8), (2, 0.6), (3, 0.4)], [(3, 12.0), (2, 7.0), (4, 2.0)],
                      method="convex", vector_weight=0.6))
    assert fused[1] == pytest.approx(0.6)
    assert fused[2] == pytest.approx(0.6 * 0.5 + 0.4 * 0.5)
    assert fused[3] == pytest.approx(0.4)
    assert fused[4] == pytest.approx(0.0)
    # Scaling one ranking's scores changes nothing.
    scaled = dict(fuse([(1, 0.8), (2, 0.6), (3, 0.4)], [(3, 1200.0), (2, 700.0), (4, 200.0)],
                       method="convex", vector_weight=0.6))
    assert scaled == pytest.approx(fused)


def test_convex_single_candidate_or_equal_scores_count_fully() -> None:
    assert fuse([(5, 0.3)], [], method="convex", vector_weight=0.7) == [(5, pytest.approx(0.7))]
    fused = dict(fuse([(1, 0.5), (2, 0.5)], [], method="convex", vector_weight=1.0))
    assert fused == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_zscore_scores_are_standardised_per_ranking() -> None:
    # Both rankings are z = +1.2247, 0, -1.2247; a candidate missing from a ranking gets its lowest z.
    z = 1.5 ** 0.5
    fused = dict(fuse([(1, 0.8), (2, 0.6), (3, 0.4)], [(3, 12.0), (2, 7.0), (4, 2.0)],
                      method="zscore", vector_weight=0.6))
    assert fused[1] == pytest.approx(0.6 * z - 0.4 * z)
    assert fused[2] == pytest.approx(0.0)
    assert fused[3] == pytest.approx(-0.6 * z + 0.4 * z)
    assert fused[4] == pytest.approx(-z)
    # Shifting and scaling one ranking's scores changes nothing (cosine and BM25 are on unrelated scales).
    moved = dict(fuse([(1, 0.8), (2, 0.6), (3, 0.4)], [(3, 1205.0), (2, 705.0), (4, 205.0)],
                      method="zscore", vector_weight=0.6))
    assert moved == pytest.approx(fused)


def test_zscore_equal_scores_count_as_average() -> None:
    assert fuse([(5, 0.3)], [], method="zscore", vector_weight=0.7) == [(5, pytest.approx(0.0))]
    fused = dict(fuse([(1, 0.5), (2, 0.5)], [(2, 3.0), (9, 1.0)], method="zscore", vector_weight=0.5))
    assert fused == {1: pytest.approx(-0.5), 2: pytest.approx(0.5), 9: pytest.approx(-0.5)}


@pytest.mark.parametrize("method", ["rrf", "weighted_rrf", "convex", "zscore"])
def test_fuse_empty_inputs(method: FusionMethod) -> None:
    assert fuse([], [], method=method) == []
    assert [i for i, _ in fuse([], [(4, 1.0), (2, 0.5)], method=method)] == [4, 2]
    assert [i for i, _ in fuse([(4, 0.9), (2, 0.5)], [], method=method)] == [4, 2]


@pytest.mark.parametrize("method", ["rrf", "weighted_rrf", "convex", "zscore"])
def test_fuse_ties_are_deterministic(method: FusionMethod) -> None:
    # 7 tops the vector ranking and 3 the keyword one with equal weights: equal scores, then the better
    # best rank (both 1), then the lower id.
    a = fuse([(7, 0.9)], [(3, 4.0)], method=method, vector_weight=0.5)
    b = fuse([(7, 0.9)], [(3, 4.0)], method=method, vector_weight=0.5)
    assert a == b
    assert [i for i, _ in a] == [3, 7]
    assert a[0][1] == pytest.approx(a[1][1])


@pytest.mark.parametrize("method", ["rrf", "weighted_rrf", "convex", "zscore"])
def test_fuse_limit(method: FusionMethod) -> None:
    vector, keyword = [(1, 0.9), (2, 0.8), (3, 0.7)], [(4, 3.0), (1, 2.0)]
    assert len(fuse(vector, keyword, method=method, limit=2)) == 2
    assert len(fuse(vector, keyword, method=method)) == 4
    assert fuse(vector, keyword, method=method, limit=0) == []


def test_fuse_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fuse([(1, 1.0)], [], vector_weight=1.5)
    with pytest.raises(ValueError):
        fuse([(1, 1.0)], [], method="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1], [2]], weights=[1.0])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[-1.0])
