"""Prometheus metrics after a real request mix (uvicorn on loopback, the gateway in front of a local fake
upstream, a WebSocket, an upload and its ingestion job, a search, a rate-limited key), and the Grafana
dashboard under deploy/grafana/: a valid dashboard model (its JSON schema, a grid that fits) whose every
PromQL expression parses and names only metrics that ``/metrics`` exposes after that mix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from atrium.app import create_app
from tests.api.helpers import upload, wait_job
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings
from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import gateway_config

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "atrium-dashboard.json"
SCHEMA = GRAFANA / "dashboard.schema.json"
# Grafana's own variables, as a Prometheus server would see them once Grafana filled them in
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# What the dashboard must show (issue 15): one family for each
REQUIRED = {"atrium_http_requests_total", "atrium_http_request_seconds_bucket", "atrium_http_open_streams",
            "atrium_gateway_time_to_first_token_seconds_bucket", "atrium_gateway_calls_total",
            "atrium_gateway_tokens_total", "atrium_gateway_cost_usd_total", "atrium_gateway_breaker_state",
            "atrium_embedding_seconds_bucket", "atrium_jobs", "atrium_job_wait_seconds_bucket",
            "atrium_job_run_seconds_bucket", "atrium_ws_sockets"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def selectors(expr: str) -> list[str]:
    """The metric names an expression selects (every vector selector, inside functions and aggregations)."""
    for variable, stand_in in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, stand_in)
    names: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            named = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert named, f"a selector without a metric name in {expr!r}"
            names.append(named)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


async def metrics_text(http: httpx.AsyncClient) -> str:
    scraped = await http.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    return scraped.text


async def request_mix(server: LiveServer, http: httpx.AsyncClient) -> dict[str, Any]:
    """Every kind of traffic the dashboard shows; returns what the assertions need."""
    seen: dict[str, Any] = {}
    chat = {"model": "good", "messages": [{"role": "user", "content": "Hello there"}]}
    assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
    # a stream, held open while /metrics is scraped
    streaming = {**chat, "stream": True, "messages": [{"role": "user", "content": "Stream it"}]}  # no cache hit
    async with http.stream("POST", "/v1/chat/completions", json=streaming) as streamed:
        assert streamed.status_code == 200
        chunks = streamed.aiter_bytes()
        await anext(chunks)
        seen["while_streaming"] = samples(await metrics_text(http))
        async for _ in chunks:
            pass
    # a failing provider (503 twice), then the fallback
    fallback = {"model": "resilient", "messages": [{"role": "user", "content": "Fall back"}]}
    assert (await http.post("/v1/chat/completions", json=fallback)).status_code == 200
    assert (await http.post("/v1/embeddings", json={"model": "hash-bow", "input": ["a b c"]})).status_code == 200
    async with connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                       open_timeout=10) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        seen["with_socket"] = samples(await metrics_text(http))
        # the ingestion job's progress reaches the socket
        queued = await upload(http, {"notes.md": "# Metrics\n\nQueue depth and job latency are measured."})
        seen["job_id"] = queued["job_id"]
        assert (await wait_job(http, queued["job_id"]))["status"] == "succeeded"
        while json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type") != "job":
            pass
    found = await http.post("/api/v1/search/semantic", json={"query": "queue depth", "collection": "docs"})
    assert found.status_code == 200, found.text
    assert (await http.get("/no/such/path")).status_code == 404
    limited = await http.post("/api/v1/admin/keys", json={"name": "slow", "requests_per_minute": 1})
    assert limited.status_code == 201, limited.text
    slow = {"Authorization": f"Bearer {limited.json()['key']}"}
    search = {"query": "queue", "collection": "docs"}
    statuses = [(await http.post("/api/v1/search/semantic", json=search, headers=slow)).status_code
                for _ in range(2)]
    assert statuses == [200, 429]
    return seen


async def test_metrics_after_a_request_mix_and_the_dashboard_queries_only_what_they_expose(
        tmp_path: Path) -> None:
    async with FaultUpstream(token_delay=0.08) as upstream:
        settings = await asyncio.to_thread(make_settings, tmp_path / "data", gateway=gateway_config(upstream))
        async with LiveServer(create_app(settings), free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                  timeout=30) as http:
            seen = await request_mix(server, http)
            exposition = await metrics_text(http)
    found = samples(exposition)

    # HTTP by route template and status, never by raw path
    assert value(found, "atrium_http_requests_total", method="POST", route="/v1/chat/completions",
                 status="200") == 3
    assert value(found, "atrium_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(found, "atrium_http_requests_total", method="GET", route="/api/v1/jobs/{job_id}",
                 status="200") >= 1
    assert value(found, "atrium_http_requests_total", method="POST", route="/api/v1/search/semantic",
                 status="429") == 1
    assert seen["job_id"] not in exposition and "/no/such/path" not in exposition
    assert value(found, "atrium_http_request_seconds_count", method="POST", route="/v1/chat/completions") == 3
    # an SSE response is an open stream while it runs, and no more after
    assert value(seen["while_streaming"], "atrium_http_open_streams", route="/v1/chat/completions") == 1
    assert value(found, "atrium_http_open_streams", route="/v1/chat/completions") == 0
    assert value(seen["with_socket"], "atrium_ws_sockets") == 1 and value(found, "atrium_ws_sockets") == 0
    # the gateway: first tokens, calls by outcome, tokens and cost, breakers
    assert value(found, "atrium_gateway_time_to_first_token_seconds_count", model="good") == 3
    assert value(found, "atrium_gateway_calls_total", model="good", provider="up", outcome="ok") == 3
    assert value(found, "atrium_gateway_tokens_total", model="good", direction="completion") > 0
    assert value(found, "atrium_gateway_cost_usd_total", model="good") > 0
    assert value(found, "atrium_gateway_breaker_state", provider="up") == 0
    # embeddings: the upload's documents, the search's query, /v1/embeddings
    for kind in ("document", "query", "api"):
        assert value(found, "atrium_embedding_texts_total", model="hash-bow", kind=kind) >= 1, kind
        assert value(found, "atrium_embedding_seconds_count", model="hash-bow", kind=kind) >= 1, kind
    # jobs: the depth read from the job table at the scrape, the ingestion job's wait and run
    assert value(found, "atrium_jobs", kind="ingest", status="queued") == 0
    assert value(found, "atrium_jobs", kind="ingest", status="running") == 0
    assert value(found, "atrium_job_wait_seconds_count", kind="ingest") == 1
    assert value(found, "atrium_job_run_seconds_count", kind="ingest", outcome="succeeded") == 1
    assert value(found, "atrium_rate_limited_total", scope="key") == 1
    assert value(found, "atrium_ws_events_total", outcome="delivered") >= 1

    exposed = {name for name, _labels in found}
    used: set[str] = set()
    for title, expr in await asyncio.to_thread(dashboard_exprs):
        names = selectors(expr)
        assert names, f"{title}: {expr} selects no metric"
        missing = set(names) - exposed
        assert not missing, f"{title}: {sorted(missing)} not exposed by /metrics"
        used |= set(names)
    assert used >= REQUIRED, sorted(REQUIRED - used)


def test_the_dashboard_is_a_valid_grafana_dashboard_model() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    board = json.loads(DASHBOARD.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(board), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    # every panel reads the dashboard's Prometheus data source variable
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"] == reference, panel["title"]
            refs = [target["refId"] for target in panel["targets"]]
            assert len(set(refs)) == len(refs), panel["title"]
            assert all(target["datasource"] == reference for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize(("expr", "names"), [
    ("sum by (route) (rate(atrium_http_requests_total{status=~\"5..\"}[$__rate_interval]))",
     ["atrium_http_requests_total"]),
    ("histogram_quantile(0.95, sum by (le) (rate(atrium_a_bucket[5m]))) / on() group_left sum(atrium_b)",
     ["atrium_a_bucket", "atrium_b"]),
    ("{__name__=\"atrium_c\"} > 0", ["atrium_c"]),
])
def test_the_selector_reader_finds_every_metric_name(expr: str, names: list[str]) -> None:
    assert selectors(expr) == names
