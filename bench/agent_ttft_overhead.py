"""Figure (issue 13): the time to first token that ``/api/v1/chat/ask`` (a turn of the assistant graph) adds
over a direct streaming gateway call, on the same Atrium, the same upstream, side by side (target: <= 10 ms
median).

One fast local upstream (bench/upstream_server.py: first token at once, ``--tokens`` tokens, each `` [1]``
so that the answer cites its source and validation accepts the first draft: one model call per turn). One
``atrium serve`` (``--after-src``, default: this tree) on a fresh SQLite data dir (the embedded default:
in-process limits, index and replay buffer), the gateway catalogue of bench/_gateway.py with
``default_model: bench-model`` (so the chat use case calls the upstream too), the hash embedder, metering on,
rate limits on and far above what the bench sends, the response cache off. One small document is ingested
into ``handbook``. With ``--before-src`` (e.g. ``git archive main src | tar -x -C /tmp/before``), a second
server runs that tree the same way: its chat answers without the graph, so ``ask(after) - ask(before)`` is
the graph's own share.

Per iteration, on each server in turn (the order alternates), sequentially on one keep-alive connection,
the admin key: ``direct``: ``POST /v1/chat/completions`` (``stream: true``, ``bench-model``), TTFT = the
first chunk with content; ``ask``: ``POST /api/v1/chat/ask`` (``stream: true``, a new conversation,
``collection: handbook``, a question the rule pass classifies as ``qa``), TTFT = the first ``token`` event.
The difference ask - direct is taken per iteration. What ``ask`` adds: the body's checks, the collection
lookup (cached), one transaction storing the conversation, the question and the pending answer (and their
change-log rows), the detached run and its journal, the history query, the guard's admit (cached) and
input stage, hybrid retrieval (embedding the question, HNSW, FTS5), the context stage, the graph's
retrieve, classify (rules: no model call) and answer nodes up to the first token through the output
sanitiser.

    .venv/bin/python bench/agent_ttft_overhead.py [--iterations 300] [--before-src /tmp/before/src]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready  # noqa: E402
from _gateway import (  # noqa: E402
    ATRIUM_CONFIG,
    HIGH_LIMIT,
    UPSTREAM_KEY,
    Server,
    machine_note,
    markdown,
    start_upstream,
)

AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}
COLLECTION = "handbook"
DOCUMENT = """\
# Travel and expenses handbook

Expense approval limit: a manager approves expenses up to 2,000 EUR; above that the finance director
approves. Receipts are uploaded within 30 days of the expense.
"""
QUESTION = "What is the expense approval limit for a manager?"


@dataclass
class Side:
    name: str
    src: Path | None
    process: object
    url: str
    direct: list[float] = field(default_factory=list)
    ask: list[float] = field(default_factory=list)
    sources: int = -1


def server_env(data_dir: Path, config: Path, src: Path | None) -> dict[str, str]:
    env = atrium_env(
        data_dir, ATRIUM_CONFIG=str(config), ATRIUM_EMBEDDING__PROVIDER="hash",
        ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_CHAT__PROVIDER="fake", PYTHONHASHSEED="0",
        ATRIUM_RATE_LIMITS__ENABLED="true", ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE=HIGH_LIMIT)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


@contextlib.contextmanager
def servers(tmp: Path, upstream: Server, trees: dict[str, Path | None]) -> Iterator[list[Side]]:
    config = tmp / "atrium.yaml"
    config.write_text(ATRIUM_CONFIG.format(upstream=upstream.extra["base"] + "/v1", key=UPSTREAM_KEY)
                      + "  default_model: bench-model\n")
    sides: list[Side] = []
    try:
        for name, src in trees.items():
            process, url = start_serve(server_env(tmp / f"{name}-data", config, src), tmp / f"{name}.log")
            sides.append(Side(name, src, process, url))
            try:
                wait_ready(process, url, timeout=180)
            except (RuntimeError, TimeoutError):
                raise SystemExit(f"{name} did not start: {(tmp / f'{name}.log').read_text()[-3000:]}") from None
        yield sides
    finally:
        for side in sides:
            stop(side.process)  # type: ignore[arg-type]


def ingest(client: httpx.Client) -> None:
    job = client.post("/api/v1/documents", data={"collection": COLLECTION},
                      files=[("files", ("handbook.md", DOCUMENT.encode(), "text/markdown"))]).json()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.get(f"/api/v1/jobs/{job['job_id']}").json()
        if state["status"] == "succeeded":
            return
        if state["status"] == "failed":
            raise SystemExit(f"ingestion failed: {state}")
        time.sleep(0.1)
    raise SystemExit("ingestion not done after 120 s")


def direct(client: httpx.Client, tokens: int) -> float:
    body = {"model": "bench-model", "stream": True, "max_tokens": tokens,
            "messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise SystemExit(f"direct: {response.status_code} {response.read()[:300]!r}")
        for line in response.iter_lines():
            if first is None and line.startswith("data:") and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
            if line.strip() == "data: [DONE]":
                break
    if first is None:
        raise SystemExit("direct: no content")
    return first * 1000


def ask(client: httpx.Client) -> tuple[float, list[str], int]:
    """TTFT in ms, the event names, and how many sources the answer had."""
    started = time.perf_counter()
    first, names, sources = None, [], -1
    with client.stream("POST", "/api/v1/chat/ask",
                       json={"message": QUESTION, "collection": COLLECTION, "stream": True}) as response:
        if response.status_code != 200:
            raise SystemExit(f"ask: {response.status_code} {response.read()[:300]!r}")
        for line in response.iter_lines():
            if line.startswith("event:"):
                names.append(line[6:].strip())
                if first is None and names[-1] == "token":
                    first = time.perf_counter() - started
            elif line.startswith("data:") and names and names[-1] == "sources":
                sources = len(json.loads(line[5:])["sources"])
    if first is None or names[-1] != "done":
        raise SystemExit(f"ask: no token or not done: {names}")
    return first * 1000, names, sources


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--after-src", type=Path, default=None, help="the tree measured (default: installed)")
    parser.add_argument("--before-src", type=Path, default=None, help="a tree to compare (its chat without graph)")
    args = parser.parse_args()
    if not (1 <= args.iterations <= 100_000 and 0 <= args.warmup <= 10_000 and 1 <= args.tokens <= 4096):
        raise SystemExit("--iterations, --warmup or --tokens out of range")
    trees: dict[str, Path | None] = {"after": args.after_src.resolve() if args.after_src else None}
    if args.before_src is not None:
        trees["before"] = args.before_src.resolve()
    for name, src in trees.items():
        if src is not None and not (src / "atrium" / "__init__.py").is_file():
            raise SystemExit(f"{name}: no atrium package under {src}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="atrium-agent-ttft-") as folder:
        tmp = Path(folder)
        upstream = start_upstream(tmp, tokens=args.tokens, word=" [1]")
        try:
            with servers(tmp, upstream, trees) as sides:
                clients = {s.name: httpx.Client(base_url=s.url, headers=AUTH, timeout=60) for s in sides}
                try:
                    for side in sides:
                        ingest(clients[side.name])
                        _, names, side.sources = ask(clients[side.name])
                        if side.sources < 1:
                            raise SystemExit(f"{side.name}: the question retrieved no source")
                        if "discard" in names:
                            raise SystemExit(f"{side.name}: validation refused the upstream's answer: {names}")
                        for _ in range(args.warmup):
                            direct(clients[side.name], args.tokens)
                            ask(clients[side.name])
                    for number in range(args.iterations):
                        for side in (sides if number % 2 == 0 else sides[::-1]):
                            side.direct.append(direct(clients[side.name], args.tokens))
                            side.ask.append(ask(clients[side.name])[0])
                finally:
                    for client in clients.values():
                        client.close()
        finally:
            stop(upstream.process)
    report(sides, args, time.monotonic() - started)


def report(sides: list[Side], args: argparse.Namespace, elapsed: float) -> None:
    rows = []
    for side in sides:
        added = [a - d for a, d in zip(side.ask, side.direct, strict=True)]
        rows.append([side.name, str(side.src or "installed"), str(side.sources),
                     f"{statistics.median(side.direct):.2f} / {percentile(side.direct, 0.95):.2f}",
                     f"{statistics.median(side.ask):.2f} / {percentile(side.ask, 0.95):.2f}",
                     f"**{statistics.median(added):.2f}** / {percentile(added, 0.95):.2f}"])
    print(f"{args.iterations} sequential iterations (after {args.warmup} warm-up), each a direct stream then an "
          f"ask stream per server, servers alternating; upstream: first token at once, {args.tokens} tokens; "
          f"{machine_note()}; the run took {elapsed:.0f} s\n")
    print(markdown(["server", "tree", "sources", "direct TTFT ms: median / p95", "chat/ask TTFT ms: median / p95",
                    "added (ask - direct, per iteration) ms: median / p95"], rows))
    if len(sides) == 2:
        after, before = sides
        graph = [a - b for a, b in zip(after.ask, before.ask, strict=True)]
        print(f"\nchat/ask after - before (the graph's own share), per iteration: median "
              f"{statistics.median(graph):.2f} ms, p95 {percentile(graph, 0.95):.2f} ms")


if __name__ == "__main__":
    main()
