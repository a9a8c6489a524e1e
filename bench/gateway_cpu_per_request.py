"""Figure: gateway CPU per request, Atrium vs the LiteLLM proxy (issue 3 target: Atrium <= 1/5 of LiteLLM's).

One run, one local upstream (bench/upstream_server.py, 64 tokens, no delays), both proxies in front of it with
auth, rate limits and metering on (see bench/_gateway.py). For each round and each side, bench/loadgen.py
sends ``--requests`` non-stream requests and as many streams (with ``include_usage``) at ``--concurrency``,
after a warm-up, and reads the proxy's CPU time (user+sys, process tree) over the measured window. The
table gives the median over rounds of CPU ms per request, and the upstream's own CPU as a floor.

    bash bench/peers/setup_litellm.sh
    .venv/bin/python bench/gateway_cpu_per_request.py [--requests 1000] [--concurrency 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gateway import add_tree_options, in_turn, load, machine_note, markdown, parse_peers, ratio, stack, tree_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--peers", default="atrium,litellm", help="proxies to measure (comma-separated)")
    add_tree_options(parser)
    args = parser.parse_args()
    peers = parse_peers(args.peers)
    sources = tree_sources(args, peers)
    cpu: dict[tuple[str, bool], list[float]] = {}
    upstream_cpu: dict[tuple[str, bool], list[float]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), peers, sources, tokens=args.tokens) as servers:
        upstream = servers["upstream"]
        for turn in range(args.rounds):
            for stream in (False, True):
                for name in ["upstream", *in_turn(peers, turn)]:
                    result = load(servers[name], upstream, requests=args.requests, concurrency=args.concurrency,
                                  stream=stream, warmup=min(200, args.requests))
                    if (result["outcomes"] != {"finished": result["requests"]}
                            or result["upstream_requests"] != result["requests"]):
                        failures.append(f"{name} stream={stream}: {result['outcomes']}, "
                                        f"{result['upstream_requests']} reached the upstream")
                    n = result["requests"]
                    cpu.setdefault((name, stream), []).append(1000 * result["server_cpu_s"] / n)
                    upstream_cpu.setdefault((name, stream), []).append(1000 * result["upstream_cpu_s"] / n)
    rows = []
    for stream in (False, True):
        med = {name: statistics.median(cpu[(name, stream)]) for name in peers}
        rows.append([
            "stream" if stream else "non-stream",
            *(f"{med[name]:.3f} ms" for name in peers),
            f"{statistics.median(upstream_cpu[('upstream', stream)]):.3f} ms",
            ratio(med[peers[0]], med[peers[1]]) if len(peers) == 2 else "n/a",
        ])
    print(f"CPU per request (median of {args.rounds} rounds x {args.requests} requests, concurrency "
          f"{args.concurrency}, {args.tokens} tokens; {machine_note()})\n")
    pair = f"{peers[0]} / {peers[1]}" if len(peers) == 2 else "ratio"
    print(markdown(["kind", *peers, "upstream itself", pair], rows))
    if failures:
        print("\nnot all requests finished:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
