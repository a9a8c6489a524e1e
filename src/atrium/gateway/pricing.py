"""Prices in USD per 1M tokens, and the cost of a call.

The default table covers widely used models by their upstream id; dated versions match by prefix
(``gpt-4o-2024-08-06`` costs what ``gpt-4o`` costs). A catalogue entry's own prices always win, so an
operator can correct or extend this table in config without a release. Unknown models cost 0 and are
reported as such (``known=False``) so nobody mistakes "free" for "unpriced".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0
    known: bool = True

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1_000_000


FREE = Price(0.0, 0.0, known=True)
UNPRICED = Price(0.0, 0.0, known=False)

# Published list prices (USD per 1M input/output tokens), as of late 2026; edit in config, not here.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.4),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.4, 1.6),
    "gpt-4.1-nano": Price(0.1, 0.4),
    "gpt-4o": Price(2.5, 10.0),
    "gpt-4o-mini": Price(0.15, 0.6),
    "o3": Price(2.0, 8.0),
    "o3-mini": Price(1.1, 4.4),
    "o4-mini": Price(1.1, 4.4),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "llama-3.1-8b-instant": Price(0.05, 0.08),
    "llama-3.3-70b-versatile": Price(0.59, 0.79),
    "openai/gpt-oss-120b": Price(0.15, 0.75),
    "openai/gpt-oss-20b": Price(0.1, 0.5),
}


def default_price(upstream_model: str) -> Price:
    """The table's price for ``upstream_model``: exact id, else the longest id it starts with."""
    if upstream_model in DEFAULT_PRICES:
        return DEFAULT_PRICES[upstream_model]
    matches = [name for name in DEFAULT_PRICES if upstream_model.startswith(name)]
    return DEFAULT_PRICES[max(matches, key=len)] if matches else UNPRICED
