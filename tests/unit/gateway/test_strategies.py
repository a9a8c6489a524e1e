"""Candidate ordering per strategy, the latency tracker, and the wrapper that feeds it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from atrium.gateway.providers.fake import FakeChatModel
from atrium.gateway.strategies import Candidate, LatencyTracker, order_candidates
from atrium.gateway.timeouts import FirstEventTimeout, LatencyObservingChatModel
from tests.unit.gateway.test_fallback import ScriptedModel, answer, collect, failure

CHEAP = Candidate("cheap", input_price_per_1m=0.1, output_price_per_1m=0.4)
MID = Candidate("mid", input_price_per_1m=1.0, output_price_per_1m=2.0)
DEAR = Candidate("dear", input_price_per_1m=3.0, output_price_per_1m=15.0)
LOCAL = Candidate("local", local=True)  # free


def names(candidates: list[Candidate]) -> list[str]:
    return [c.name for c in candidates]


def order(candidates: list[Candidate], strategy: str, latency: LatencyTracker | None = None,
          seed: int = 0) -> list[str]:
    return names(order_candidates(candidates, strategy, latency=latency or LatencyTracker(),  # type: ignore[arg-type]
                                  rng=random.Random(seed)))


def test_fallback_keeps_the_configured_order() -> None:
    assert order([DEAR, CHEAP, MID], "fallback") == ["dear", "cheap", "mid"]


def test_lowest_cost_orders_by_input_plus_output_price_and_ties_keep_the_configured_order() -> None:
    same_as_mid = Candidate("same", input_price_per_1m=2.0, output_price_per_1m=1.0)
    assert order([DEAR, same_as_mid, MID, CHEAP, LOCAL], "lowest_cost") == ["local", "cheap", "same", "mid", "dear"]
    assert order([MID, same_as_mid], "lowest_cost") == ["mid", "same"]


def test_lowest_latency_measures_the_unknown_first_then_the_fastest() -> None:
    tracker = LatencyTracker()
    tracker.observe("dear", 0.2)
    tracker.observe("cheap", 0.9)
    tracker.observe("mid", 0.5)
    assert order([CHEAP, MID, DEAR], "lowest_latency", tracker) == ["dear", "mid", "cheap"]
    assert order([CHEAP, LOCAL, MID, DEAR, Candidate("new")], "lowest_latency", tracker) == [
        "local", "new", "dear", "mid", "cheap"]


def test_the_tracker_is_an_ewma() -> None:
    tracker = LatencyTracker(alpha=0.2)
    assert tracker.estimate("m") is None
    tracker.observe("m", 1.0)
    assert tracker.estimate("m") == 1.0
    tracker.observe("m", 2.0)
    assert tracker.estimate("m") == pytest.approx(1.2)
    tracker.observe("m", 0.2)
    assert tracker.estimate("m") == pytest.approx(1.2 + 0.2 * (0.2 - 1.2))
    assert tracker.estimates() == {"m": pytest.approx(1.0)}
    with pytest.raises(ValueError):
        LatencyTracker(alpha=0)


def test_weighted_is_weighted_sampling_without_replacement() -> None:
    a, b, c = Candidate("a", weight=1), Candidate("b", weight=2), Candidate("c", weight=7)
    rng, tracker, draws = random.Random(42), LatencyTracker(), 20_000
    firsts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for _ in range(draws):
        ordered = names(order_candidates([a, b, c], "weighted", latency=tracker, rng=rng))
        assert sorted(ordered) == ["a", "b", "c"]  # every candidate, once
        firsts[ordered[0]] += 1
        seconds[ordered[1]] += 1
    for name, expected in {"a": 0.1, "b": 0.2, "c": 0.7}.items():
        assert firsts[name] / draws == pytest.approx(expected, abs=0.015)
    # Second place follows the same rule among the rest, e.g. P(a second) = P(b)·1/8 + P(c)·1/3.
    expected_seconds = {"a": 0.2 / 8 + 0.7 / 3, "b": 0.1 * 2 / 9 + 0.7 * 2 / 3, "c": 0.1 * 7 / 9 + 0.2 * 7 / 8}
    for name, expected in expected_seconds.items():
        assert seconds[name] / draws == pytest.approx(expected, abs=0.015)


def test_weighted_puts_zero_weights_last_and_is_reproducible_with_a_seed() -> None:
    zero = Candidate("zero", weight=0)
    candidates = [zero, Candidate("a"), Candidate("b")]
    for seed in range(50):
        assert order(candidates, "weighted", seed=seed)[-1] == "zero"
    assert order(candidates, "weighted", seed=7) == order(candidates, "weighted", seed=7)
    assert order([zero, Candidate("z2", weight=0)], "weighted") == ["zero", "z2"]


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError):
        order([CHEAP], "fastest")


class StepClock:
    """Each reading is one second after the previous."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def test_time_to_first_token_of_successful_streams_is_observed() -> None:
    tracker = LatencyTracker()
    model = LatencyObservingChatModel(ScriptedModel("m", answer("m", "a", " b")), tracker, clock=StepClock())
    assert await collect(model) == answer("m", "a", " b")
    assert tracker.estimate("m") == 1.0  # start (1) -> first token (2); later tokens not measured


async def test_over_a_first_event_timeout_the_timeout_takes_the_measure() -> None:
    tracker = LatencyTracker()
    model = LatencyObservingChatModel(FirstEventTimeout(ScriptedModel("m", answer("m", "a", " b")), 1.0),
                                      tracker, key="cat-m", clock=StepClock())
    assert await collect(model) == answer("m", "a", " b")
    assert tracker.estimates() == {"cat-m": 1.0}
    failing = LatencyObservingChatModel(FirstEventTimeout(FakeChatModel("f", fail_after_tokens=1), 1.0),
                                        tracker, clock=StepClock())
    await collect(failing)
    assert tracker.estimates() == {"cat-m": 1.0}


async def test_failed_streams_are_not_observed() -> None:
    tracker = LatencyTracker()
    before = LatencyObservingChatModel(ScriptedModel("m", [failure()]), tracker, clock=StepClock())
    after = LatencyObservingChatModel(FakeChatModel("m", fail_after_tokens=1), tracker, key="other",
                                      clock=StepClock())
    await collect(before)
    await collect(after)
    assert tracker.estimates() == {}
