"""Figure: time to first token under 50 concurrent streams, through the proxy vs the upstream direct (target:
Atrium <= 1.2x the upstream's own).

One run, one local upstream that answers like a model: ``--first-token-ms`` before the first token, then
``--tokens`` tokens ``--token-ms`` apart. 50 concurrent streams (``include_usage``) from bench/loadgen.py,
direct and through Atrium and the LiteLLM proxy (auth, rate limits, metering on: bench/_gateway.py), sides
alternating within each round; medians over rounds of each side's TTFT p50 and p95, and the proxy's CPU
per stream.

    bash bench/peers/setup_litellm.sh
    .venv/bin/python bench/gateway_ttft.py [--streams 500] [--first-token-ms 50] [--token-ms 10] [--rounds 3]

The streams all last as long, so by default they start and end in lockstep: every 0.7 s about 50 new
requests arrive together (the headline figure). ``--stagger`` spreads the first starts over one stream's
length, which the closed loop then keeps: a steady arrival of new streams instead of bursts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gateway import add_tree_options, in_turn, load, machine_note, markdown, parse_peers, stack, tree_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500, help="per side and round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers", default="atrium,litellm", help="proxies to measure (comma-separated)")
    parser.add_argument("--stagger", action="store_true",
                        help="spread the streams' starts over one stream's length (no lockstep bursts)")
    add_tree_options(parser)
    args = parser.parse_args()
    peers = parse_peers(args.peers)
    sources = tree_sources(args, peers)
    sides = ["upstream", *peers]
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    stream_ms = args.first_token_ms + (args.tokens - 1) * args.token_ms
    upstream_flags = {"tokens": args.tokens, "token_ms": args.token_ms, "first_token_ms": args.first_token_ms}
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), peers, sources, **upstream_flags) as servers:
        for turn in range(args.rounds):
            for side in ["upstream", *in_turn(peers, turn)]:
                result = load(servers[side], servers["upstream"], requests=args.streams,
                              concurrency=args.concurrency, stream=True, warmup=args.concurrency,
                              stagger_ms=stream_ms if args.stagger else 0.0)
                assert result["outcomes"] == {"finished": result["requests"]}, (side, result["outcomes"])
                runs[side].append(result)

    def med(side: str, key: str, stat: str) -> float:
        return statistics.median(r[key][stat] for r in runs[side])

    direct_p50, direct_p95 = med("upstream", "ttft_ms", "p50"), med("upstream", "ttft_ms", "p95")
    rows = []
    for side in sides:
        p50, p95 = med(side, "ttft_ms", "p50"), med(side, "ttft_ms", "p95")
        cpu = statistics.median(1000 * r["server_cpu_s"] / r["requests"] for r in runs[side])
        rows.append([side, f"{p50:.1f} ms", f"{p95:.1f} ms", f"{p50 / direct_p50:.3f}x", f"{p95 / direct_p95:.3f}x",
                     f"{med(side, 'latency_ms', 'p50'):.0f} ms", f"{cpu:.2f} ms" if side != "upstream" else "-"])
    print(f"{args.concurrency} concurrent streams, {args.streams} per side and round, {args.rounds} rounds "
          f"(medians); upstream: first token after {args.first_token_ms:g} ms, {args.tokens} tokens "
          f"{args.token_ms:g} ms apart{'; starts staggered' if args.stagger else ''}; {machine_note()}\n")
    print(markdown(["side", "TTFT p50", "TTFT p95", "p50 / direct", "p95 / direct", "stream p50",
                    "proxy CPU / stream"], rows))


if __name__ == "__main__":
    main()
