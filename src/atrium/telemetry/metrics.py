"""Prometheus metrics, in a registry owned by the app (no module-level globals).

Labels never carry tenant, user or key ids (unbounded and private); per-tenant figures live in the usage
table. Breaker states are read when ``/metrics`` is scraped, so the gauge shows the shared (Redis) state
in the scale profile, not one replica's memory.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gateway_calls = Counter(
            "atrium_gateway_calls", "Gateway calls by serving model and outcome.",
            ["model", "provider", "outcome"], registry=self.registry)
        self.gateway_tokens = Counter(
            "atrium_gateway_tokens", "Tokens through the gateway.", ["model", "direction"],
            registry=self.registry)
        self.gateway_cost = Counter(
            "atrium_gateway_cost_usd", "Cost of gateway calls in USD.", ["model"], registry=self.registry)
        self.gateway_latency = Histogram(
            "atrium_gateway_call_seconds", "Duration of gateway calls.", ["model"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.breaker_state = Gauge(
            "atrium_gateway_breaker_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"], registry=self.registry)
        self.breaker_failures = Gauge(
            "atrium_gateway_breaker_failures", "Consecutive failures counted by each provider's breaker.",
            ["provider"], registry=self.registry)
        self.rate_limited = Counter(
            "atrium_rate_limited", "Requests refused by Atrium's own rate limits.", ["scope"],
            registry=self.registry)
        self.ws_sockets = Gauge("atrium_ws_sockets", "Open WS /ws sockets in this process.", registry=self.registry)
        self.ws_events = Counter(
            "atrium_ws_events", "Broadcast events offered to sockets: delivered (queued) or dropped (queue full).",
            ["outcome"], registry=self.registry)
        self.ws_closed = Counter(
            "atrium_ws_closed", "Sockets the server closed: slow (4008), heartbeat (4408), unauthorized (4401).",
            ["reason"], registry=self.registry)

    def observe_call(self, *, model: str, provider: str, outcome: str, prompt_tokens: int,
                     completion_tokens: int, cost_usd: float, seconds: float) -> None:
        self.gateway_calls.labels(model, provider, outcome).inc()
        if prompt_tokens:
            self.gateway_tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.gateway_tokens.labels(model, "completion").inc(completion_tokens)
        if cost_usd:
            self.gateway_cost.labels(model).inc(cost_usd)
        self.gateway_latency.labels(model).observe(seconds)

    def set_breakers(self, states: Iterable[tuple[str, str, int]]) -> None:
        """``(provider, state, failures)`` for every breaker."""
        for provider, state, failures in states:
            self.breaker_state.labels(provider).set(BREAKER_STATES.get(state, 0))
            self.breaker_failures.labels(provider).set(failures)

    def render(self) -> bytes:
        return generate_latest(self.registry)
