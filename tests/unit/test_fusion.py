"""Reciprocal rank fusion."""

from __future__ import annotations

import pytest

from atrium.knowledge.fusion import reciprocal_rank_fusion


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
