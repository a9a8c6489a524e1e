"""Helpers for the gateway benches (issue 3): one local upstream, Atrium and the LiteLLM proxy in front of it,
and the load generator, each in its own process.

* ``bench/upstream_server.py``: the OpenAI-format upstream (run with this interpreter: uvloop, httptools).
* Atrium: ``atrium serve`` with the gateway catalogue below, auth on (the bootstrap admin key), per-key rate
  limits on and set far above what a bench sends, metering on (per-token prices; usage rows are written to
  its SQLite database in batches), the response cache off (every request must reach the upstream).
* LiteLLM: ``bench/.venv-litellm`` (``bash bench/peers/setup_litellm.sh``), one worker, a master key,
  per-deployment rpm/tpm enforced by the router's pre-call checks, prices, fallbacks
  (``bench/peers/litellm_config.yaml``). Offline: ``LITELLM_LOCAL_MODEL_COST_MAP=True``, telemetry off.
* ``bench/loadgen.py``: the client, in its own process, which also reads each server's CPU time from /proc
  over exactly the measured window.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_bin, atrium_env, free_port, start_serve, stop, wait_ready  # noqa: E402

LITELLM_VENV = Path(os.environ.get("LITELLM_VENV", HERE / ".venv-litellm"))
LITELLM_KEY = "sk-bench-master-0123456789abcdef"
UPSTREAM_KEY = "sk-bench-upstream"
PEERS = ("upstream", "atrium", "litellm", "atrium-nobreaker", "atrium-before", "atrium-traced")
# atrium-nobreaker: Atrium with its circuit breaker never opening, so every call meets the upstream's faults
# (with the default breaker, a failing model is soon skipped for reset_timeout_s and the backup serves all)
PEER_ENV = {"atrium": {}, "atrium-nobreaker": {"ATRIUM_GATEWAY__BREAKER__FAILURE_THRESHOLD": "1000000000"},
            "atrium-before": {}, "atrium-traced": {"ATRIUM_TELEMETRY__TRACING__ENABLED": "true"}}
# atrium-traced: Atrium (the "atrium" peer's source tree) with OpenTelemetry tracing on, every trace kept and
# exported over OTLP to the upstream's /v1/traces sink (which answers 200 and counts the exports).
# atrium-before: Atrium from another source tree (``--before-src``, e.g. a ``git worktree`` of the commit
# before a change), run by the same virtualenv with that tree first on PYTHONPATH; ``--after-src`` does the
# same for "atrium". Both sides then run side by side in one sitting (see add_tree_options).
FAULT_MODEL, BACKUP_MODEL, FALLBACK_ROUTE = "bench-model", "bench-backup", "bench"
HIGH_LIMIT = "100000000"  # requests per minute: on, never reached

ATRIUM_CONFIG = """\
gateway:
  providers:  # two providers on one upstream: Atrium's circuit breakers are per provider
    up: {{kind: openai, base_url: "{upstream}", api_key: "{key}"}}
    up-backup: {{kind: openai, base_url: "{upstream}", api_key: "{key}"}}
  models:
    bench-model: {{provider: up, model: bench-model, input_price_per_1m: 0.5, output_price_per_1m: 1.5}}
    bench-backup: {{provider: up-backup, model: bench-backup, input_price_per_1m: 0.5, output_price_per_1m: 1.5}}
  routes:
    bench: {{models: [bench-model, bench-backup], strategy: fallback}}
  cache: {{enabled: false}}  # a bench repeats one request; LiteLLM caches nothing by default either
"""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str  # the chat-completions endpoint
    key: str | None
    model: str = FAULT_MODEL  # what a fallback-less request names; see fallback_model
    fallback_model: str = FAULT_MODEL
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


def _wait_http(process: subprocess.Popen[bytes], url: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} not up after {timeout} s")


def start_upstream(tmp: Path, **flags: object) -> Server:
    port = free_port()
    args = [sys.executable, str(HERE / "upstream_server.py"), "--port", str(port)]
    for name, value in flags.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(args, stdout=(tmp / "upstream.log").open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    _wait_http(process, f"{base}/stats", "upstream")
    return Server("upstream", process, f"{base}/v1/chat/completions", None, extra={"base": base})


def upstream_stats(upstream: Server) -> dict[str, Any]:
    return httpx.get(f"{upstream.extra['base']}/stats", timeout=5).json()


def add_tree_options(parser: argparse.ArgumentParser) -> None:
    """``--before-src``/``--after-src``: the source trees of the ``atrium-before`` and ``atrium`` peers."""
    parser.add_argument("--before-src", type=Path, default=None,
                        help="source tree (its src/) that the atrium-before peer runs")
    parser.add_argument("--after-src", type=Path, default=None,
                        help="source tree that the atrium peer runs (default: the installed one)")


def tree_sources(args: argparse.Namespace, peers: Sequence[str]) -> dict[str, Path]:
    sources = {name: path.resolve() for name, path in
               (("atrium-before", args.before_src), ("atrium", args.after_src)) if path is not None}
    if "atrium-before" in peers and "atrium-before" not in sources:
        raise SystemExit("the atrium-before peer needs --before-src")
    for path in sources.values():
        if not (path / "atrium" / "__init__.py").exists():
            raise SystemExit(f"{path} has no atrium package")
    return sources


def in_turn(sides: Sequence[str], round_number: int) -> list[str]:
    """The sides in this round's order: reversed every other round, so no side always goes first."""
    return list(sides) if round_number % 2 == 0 else list(reversed(sides))


def start_atrium(tmp: Path, upstream: Server, name: str = "atrium", source: Path | None = None) -> Server:
    config = tmp / f"{name}.yaml"
    config.write_text(ATRIUM_CONFIG.format(upstream=upstream.extra["base"] + "/v1", key=UPSTREAM_KEY))
    env = atrium_env(
        tmp / f"{name}-data", **PEER_ENV[name], ATRIUM_CONFIG=str(config), ATRIUM_EMBEDDING__PROVIDER="hash",
        ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_CHAT__PROVIDER="fake",
        ATRIUM_RATE_LIMITS__ENABLED="true", ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE=HIGH_LIMIT)
    if name == "atrium-traced":
        env["ATRIUM_TELEMETRY__TRACING__OTLP_ENDPOINT"] = upstream.extra["base"] + "/v1/traces"
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process, url = start_serve(env, tmp / f"{name}.log")
    wait_ready(process, url, timeout=120)
    return Server(name, process, f"{url}/v1/chat/completions", BENCH_KEY, fallback_model=FALLBACK_ROUTE)


def serve_workers(tmp: Path, name: str, config: Path, workers: int, *, redis_url: str | None = None,
                  database_url: str | None = None, **settings: str) -> Server:
    """``atrium serve --workers N`` of this tree with ``config`` (rate limits on, never reached; the pid header
    on), ready once every worker process has answered ``/ready`` (a new connection each time);
    ``extra["workers"]``: their pids. ``settings``: more ``ATRIUM_*`` variables."""
    slug = name.replace(" ", "-").replace(",", "")
    env = atrium_env(
        tmp / f"{slug}-data", ATRIUM_CONFIG=str(config), ATRIUM_EMBEDDING__PROVIDER="hash",
        ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_SERVER__PID_HEADER="true",
        ATRIUM_RATE_LIMITS__ENABLED="true", ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE=HIGH_LIMIT, ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        **settings)
    env["PYTHONPATH"] = str(HERE.parent / "src")  # this tree's Atrium, whatever the venv installed
    if database_url:
        env["ATRIUM_DATABASE_URL"] = database_url
    if redis_url:
        env["ATRIUM_REDIS_URL"] = redis_url
    port = free_port()
    log = tmp / f"{slug}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen([atrium_bin(), "serve", "--port", str(port), "--workers", str(workers)], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    ready: set[str] = set()
    deadline = time.monotonic() + 300
    while len(ready) < workers:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            stop(process)
            raise TimeoutError(f"{name}: {len(ready)} of {workers} processes ready")
        with contextlib.suppress(httpx.HTTPError):
            reply = httpx.get(f"{base}/ready", timeout=2)
            if reply.status_code == 200:
                ready.add(reply.headers["x-atrium-pid"])
        time.sleep(0.05)
    return Server(name, process, f"{base}/v1/chat/completions", BENCH_KEY, extra={"workers": sorted(ready)})


def start_litellm(tmp: Path, upstream: Server) -> Server:
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        raise SystemExit(f"no LiteLLM in {LITELLM_VENV}: run bash bench/peers/setup_litellm.sh")
    config = tmp / "litellm.yaml"
    template = (HERE / "peers" / "litellm_config.yaml").read_text()
    config.write_text(template.replace("UPSTREAM_URL", upstream.extra["base"] + "/v1")
                      .replace("MASTER_KEY", LITELLM_KEY))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM", "OPENAI", "DATABASE_URL"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", DISABLE_SCHEMA_UPDATE="True")
    process = subprocess.Popen(
        [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port",
         str(port), "--num_workers", "1", "--telemetry", "False"],
        env=env, cwd=tmp, stdout=(tmp / "litellm.log").open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    _wait_http(process, f"{base}/health/liveliness", "litellm")
    return Server("litellm", process, f"{base}/v1/chat/completions", LITELLM_KEY)


@contextlib.contextmanager
def stack(tmp: Path, peers: list[str], sources: dict[str, Path] | None = None,
          **upstream_flags: object) -> Iterator[dict[str, Server]]:
    """The upstream plus the named proxies, all stopped on exit; ``sources``: the source tree an Atrium peer
    runs (see add_tree_options)."""
    sources = sources or {}
    servers: dict[str, Server] = {}
    try:
        servers["upstream"] = start_upstream(tmp, **upstream_flags)
        for name in peers:
            if name.startswith("atrium"):
                source = sources.get("atrium" if name == "atrium-traced" else name)
                servers[name] = start_atrium(tmp, servers["upstream"], name, source)
        if "litellm" in peers:
            servers["litellm"] = start_litellm(tmp, servers["upstream"])
        yield servers
    finally:
        for server in reversed(servers.values()):
            stop(server.process)


def load(server: Server, upstream: Server, *, requests: int, concurrency: int, stream: bool = False,
         warmup: int = 0, model: str | None = None, max_tokens: int = 64,
         stagger_ms: float = 0.0) -> dict[str, Any]:
    """Run bench/loadgen.py against ``server`` (the upstream itself for the direct baseline); the result
    has ``server_cpu_s`` (the proxy's tree; 0 for direct) and ``upstream_cpu_s`` for the measured window,
    and ``upstream_requests``: how many calls reached the upstream (after the warm-up)."""
    pids = [upstream.pid] + ([server.pid] if server is not upstream else [])
    args = [sys.executable, str(HERE / "loadgen.py"), "--url", server.url, "--model", model or server.model,
            "--requests", str(requests), "--concurrency", str(concurrency), "--warmup", str(warmup),
            "--max-tokens", str(max_tokens), "--stagger-ms", str(stagger_ms)]
    for pid in pids:
        args += ["--cpu-pid", str(pid)]
    if server.key:
        args += ["--key", server.key]
    if stream:
        args.append("--stream")
    before = upstream_stats(upstream).get("requests", 0)
    done = subprocess.run(args, capture_output=True, check=True, timeout=900)
    result: dict[str, Any] = json.loads(done.stdout)
    result["upstream_requests"] = upstream_stats(upstream).get("requests", 0) - before - warmup
    result["upstream_cpu_s"] = result["cpu_s"][str(upstream.pid)]
    result["server_cpu_s"] = result["cpu_s"].get(str(server.pid), 0.0) if server is not upstream else 0.0
    return result


def parse_peers(value: str) -> list[str]:
    peers = [p.strip() for p in value.split(",") if p.strip()]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers {sorted(unknown)}; known: {PEERS}")
    return peers


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def machine_note() -> str:
    load1 = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, load average {load1:.1f} at the end of the run"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
