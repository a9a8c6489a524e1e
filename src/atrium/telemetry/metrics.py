"""Prometheus metrics, in a registry owned by the app (no module-level globals).

Labels never carry tenant, user or key ids (unbounded and private), nor raw paths: HTTP requests are
labelled by their route's template (``/api/v1/documents/{document_id}``), ``unmatched`` for a path no
route serves; per-tenant figures live in the usage table. Breaker states and queue depths are read when
``/metrics`` is scraped, so the gauges show the shared state (Redis, the job table) in the scale profile,
not one replica's memory.

What each family measures (names as exposed; counters gain ``_total``):

* HTTP: ``atrium_http_requests_total{method,route,status}``, ``atrium_http_request_seconds{method,route}``
  (to the end of the body: a stream's whole life), ``atrium_http_open_streams{route}`` (SSE responses
  being sent);
* gateway: ``atrium_gateway_calls_total{model,provider,outcome}``, ``atrium_gateway_tokens_total
  {model,direction}``, ``atrium_gateway_cost_usd_total{model}``, ``atrium_gateway_call_seconds{model}``,
  ``atrium_gateway_time_to_first_token_seconds{model}``, ``atrium_gateway_breaker_state{provider}``,
  ``atrium_gateway_breaker_failures{provider}``;
* knowledge: ``atrium_embedding_seconds{model,kind}``, ``atrium_embedding_texts_total{model,kind}``;
* jobs: ``atrium_jobs{kind,status}`` (queued and running, from the job table),
  ``atrium_job_wait_seconds{kind}`` (queued to started), ``atrium_job_run_seconds{kind,outcome}``;
* realtime: ``atrium_ws_sockets``, ``atrium_ws_events_total{outcome}``, ``atrium_ws_closed_total{reason}``;
* limits and guards: ``atrium_rate_limited_total{scope}``, ``atrium_guard_actions_total{guard,action}``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
UNMATCHED_ROUTE = "unmatched"
JOB_STATES = ("queued", "running")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_FIRST_TOKEN = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_JOB = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


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
        self.http_requests = Counter(
            "atrium_http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=self.registry)
        self.http_seconds = Histogram(
            "atrium_http_request_seconds", "HTTP request duration, to the end of the response body.",
            ["method", "route"], registry=self.registry, buckets=_LATENCY)
        self.open_streams = Gauge(
            "atrium_http_open_streams", "Server-sent event responses being sent.", ["route"], registry=self.registry)
        self.first_token = Histogram(
            "atrium_gateway_time_to_first_token_seconds",
            "From the start of a gateway call to its first token or tool-call delta.", ["model"],
            registry=self.registry, buckets=_FIRST_TOKEN)
        self.embedding_seconds = Histogram(
            "atrium_embedding_seconds", "Duration of one embedding call (a batch of texts).", ["model", "kind"],
            registry=self.registry, buckets=_LATENCY)
        self.embedding_texts = Counter(
            "atrium_embedding_texts", "Texts embedded.", ["model", "kind"], registry=self.registry)
        self.jobs = Gauge(
            "atrium_jobs", "Background jobs waiting (queued) or being run (running), every process's.",
            ["kind", "status"], registry=self.registry)
        self.job_wait = Histogram(
            "atrium_job_wait_seconds", "From a job's creation to the start of its run.", ["kind"],
            registry=self.registry, buckets=_JOB)
        self.job_run = Histogram(
            "atrium_job_run_seconds", "Duration of a job's run, by how it ended.", ["kind", "outcome"],
            registry=self.registry, buckets=_JOB)
        # Label children of the per-request families, kept: ``labels()`` costs more than the observation.
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._first_token: dict[str, Histogram] = {}
        self._streams: dict[str, Gauge] = {}

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

    def observe_first_token(self, model: str, seconds: float) -> None:
        child = self._first_token.get(model)
        if child is None:
            child = self._first_token[model] = self.first_token.labels(model)
        child.observe(seconds)

    def observe_embedding(self, model: str, kind: str, texts: int, seconds: float) -> None:
        self.embedding_seconds.labels(model, kind).observe(seconds)
        self.embedding_texts.labels(model, kind).inc(texts)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One finished HTTP request (the label children are kept: this runs on every request)."""
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (self.http_requests.labels(method, route, str(status)),
                                          self.http_seconds.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def open_stream(self, route: str) -> Gauge:
        """The open-streams gauge of ``route`` (kept: every SSE response counts itself in and out)."""
        child = self._streams.get(route)
        if child is None:
            child = self._streams[route] = self.open_streams.labels(route)
        return child

    def set_jobs(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """``(kind, status, count)`` for every job kind and state (kinds with no job: 0)."""
        for kind, status, count in counts:
            self.jobs.labels(kind, status).set(count)

    def set_breakers(self, states: Iterable[tuple[str, str, int]]) -> None:
        """``(provider, state, failures)`` for every breaker."""
        for provider, state, failures in states:
            self.breaker_state.labels(provider).set(BREAKER_STATES.get(state, 0))
            self.breaker_failures.labels(provider).set(failures)

    def render(self) -> bytes:
        return generate_latest(self.registry)
