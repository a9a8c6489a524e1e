"""The routing strategies: per-request ordering of a route's candidate models, and the latency figures one
strategy needs (measured by ``gateway/timeouts.py``'s ``LatencyObservingChatModel``).

``order_candidates`` is a pure function of the candidates, the strategy, the latency estimates and a random
source: the router calls it for every request and hands the ordered models to
:func:`atrium.gateway.fallback.stream_with_fallback`, so the first candidate serves and the rest are the
fallback chain. Strategies (``RouteStrategy`` in settings):

* ``fallback``: the configured order;
* ``lowest_cost``: cheapest first by input + output price per 1M tokens (ties keep the configured order);
* ``lowest_latency``: models never measured first (so they get measured), in configured order, then by the
  EWMA of time to first token;
* ``weighted``: weighted random sampling without replacement: the first pick is drawn by weight, then the
  next one from the rest by the same rule, and so on. Models with weight 0 come last, in configured order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from atrium.gateway.settings import RouteStrategy


@dataclass(frozen=True, slots=True)
class Candidate:
    """What routing needs to know about one model of a route; ``name`` is its catalogue name."""

    name: str
    input_price_per_1m: float = 0.0
    output_price_per_1m: float = 0.0
    weight: float = 1.0
    local: bool = False


class LatencyTracker:
    """Exponentially weighted moving average of time to first token, per model name (this process only).

    The first observation of a model is its estimate; each later one moves it by ``alpha`` of the gap.
    """

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self._alpha = alpha
        self._estimates: dict[str, float] = {}

    def observe(self, name: str, seconds: float) -> None:
        previous = self._estimates.get(name)
        self._estimates[name] = seconds if previous is None else previous + self._alpha * (seconds - previous)

    def estimate(self, name: str) -> float | None:
        return self._estimates.get(name)

    def estimates(self) -> dict[str, float]:
        """A copy of every estimate (for metrics and the admin view)."""
        return dict(self._estimates)


def order_candidates(
    candidates: Sequence[Candidate],
    strategy: RouteStrategy,
    *,
    latency: LatencyTracker,
    rng: random.Random,
) -> list[Candidate]:
    """The candidates in the order they should be tried for one request (see the module docstring)."""
    if strategy == "fallback":
        return list(candidates)
    if strategy == "lowest_cost":
        return sorted(candidates, key=lambda c: c.input_price_per_1m + c.output_price_per_1m)  # sort is stable
    if strategy == "lowest_latency":
        return sorted(candidates, key=lambda c: _latency_key(latency.estimate(c.name)))
    if strategy == "weighted":
        return _weighted_order(candidates, rng)
    raise ValueError(f"Unknown routing strategy {strategy!r}.")


def _latency_key(estimate: float | None) -> tuple[int, float]:
    return (0, 0.0) if estimate is None else (1, estimate)


def _weighted_order(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    remaining = [c for c in candidates if c.weight > 0]
    ordered: list[Candidate] = []
    while remaining:
        point = rng.random() * sum(c.weight for c in remaining)
        index = len(remaining) - 1  # float rounding can leave ``point`` a hair above the last boundary
        for i, candidate in enumerate(remaining):
            point -= candidate.weight
            if point < 0:
                index = i
                break
        ordered.append(remaining.pop(index))
    ordered.extend(c for c in candidates if c.weight <= 0)
    return ordered
