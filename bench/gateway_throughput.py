"""Figure: gateway requests/s at concurrency 50 (target: Atrium >= 5x LiteLLM) and added p50 latency at
concurrency 1 (target: proxy p50 minus upstream-direct p50 <= 1 ms).

One run, one local upstream (64 tokens, no delays), Atrium and the LiteLLM proxy in front of it with auth,
rate limits and metering on (bench/_gateway.py), non-stream requests from bench/loadgen.py in its own
process. Sides alternate within each round; medians over rounds. The 2 cores are shared by the client,
the upstream and the proxy, as they would be on one host: requests/s is what the proxy gets out of what is
left, so its CPU per request is shown beside it.

    bash bench/peers/setup_litellm.sh
    .venv/bin/python bench/gateway_throughput.py [--requests 3000] [--sequential 1000] [--rounds 3]
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
    parser.add_argument("--requests", type=int, default=3000, help="per side and round, at concurrency 50")
    parser.add_argument("--sequential", type=int, default=1000, help="per side and round, at concurrency 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers", default="atrium,litellm", help="proxies to measure (comma-separated)")
    add_tree_options(parser)
    args = parser.parse_args()
    peers = parse_peers(args.peers)
    sources = tree_sources(args, peers)
    sides = ["upstream", *peers]
    rps: dict[str, list[float]] = {s: [] for s in sides}
    cpu: dict[str, list[float]] = {s: [] for s in sides}
    p50: dict[str, list[float]] = {s: [] for s in sides}
    p50_added: dict[str, list[float]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), peers, sources) as servers:
        upstream = servers["upstream"]
        for turn in range(args.rounds):
            for side in ["upstream", *in_turn(peers, turn)]:
                result = load(servers[side], upstream, requests=args.requests, concurrency=50, warmup=300)
                assert result["outcomes"] == {"finished": result["requests"]}, (side, result["outcomes"])
                rps[side].append(result["rps"])
                cpu[side].append(1000 * result["server_cpu_s"] / result["requests"])
            # c=1: direct and each proxy back to back, so the difference is not the machine's mood
            direct = load(upstream, upstream, requests=args.sequential, concurrency=1, warmup=100)
            p50["upstream"].append(direct["latency_ms"]["p50"])
            for side in in_turn(peers, turn):
                result = load(servers[side], upstream, requests=args.sequential, concurrency=1, warmup=100)
                p50[side].append(result["latency_ms"]["p50"])
                p50_added[side].append(result["latency_ms"]["p50"] - direct["latency_ms"]["p50"])
    med = {s: {k: statistics.median(v[s]) if v[s] else 0.0 for k, v in
               {"rps": rps, "cpu": cpu, "p50": p50, "added": p50_added}.items()} for s in sides}
    print(f"Non-stream, {args.rounds} rounds (medians); {machine_note()}\n")
    rows = [[s, f"{med[s]['rps']:.0f}", f"{med[s]['cpu']:.3f} ms" if s != "upstream" else "-",
             f"{med[s]['p50']:.3f} ms", f"{med[s]['added']:+.3f} ms" if s != "upstream" else "-"] for s in sides]
    print(markdown(["side", "req/s at c=50", "proxy CPU / request", "p50 at c=1", "added p50 at c=1"], rows))
    if "atrium" in peers and "litellm" in peers:
        print(f"\nAtrium / LiteLLM requests/s: {ratio(med['atrium']['rps'], med['litellm']['rps'])} (target >= 5x); "
              f"Atrium added p50: {med['atrium']['added']:+.3f} ms (target <= 1 ms)")
    if len(peers) == 2:
        first, second = peers
        print(f"\n{first} / {second}: requests/s {ratio(med[first]['rps'], med[second]['rps'])}, CPU per request "
              f"{ratio(med[first]['cpu'], med[second]['cpu'])}, added p50 {med[first]['added']:+.3f} vs "
              f"{med[second]['added']:+.3f} ms")


if __name__ == "__main__":
    main()
