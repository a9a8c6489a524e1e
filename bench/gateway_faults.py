"""Figure: a failing upstream behind the gateway (target for Atrium: 2,000 requests and 500 streams 100%
succeed, and every stream ends with a typed final event: a normal finish or a typed error event).

One run, one local upstream on which ``bench-model`` fails 30% of requests with 503 (OpenAI error body) and
cuts 10% of its streams half-way (connection closed, no ``[DONE]``); ``bench-backup`` on the same upstream
stays healthy. Atrium is called on its fallback route ``bench`` (bench-model, then bench-backup); LiteLLM on
``bench-model`` with ``fallbacks: bench-model -> bench-backup``; both retry a model 3 times in all (auth,
rate limits, metering on: bench/_gateway.py). Atrium's circuit breaker soon takes a failing model out of
the rotation (for 30 s by default), after which the backup serves nearly everything; ``atrium-nobreaker``
never opens it, so every call meets the faults. The direct rows show what the upstream itself does.
Outcomes: ``finished`` (200 and a normal finish), ``error_event`` (a stream that ended with a typed error
event), ``untyped`` (ended with neither: cut, or no finish), ``http_<code>`` (an error status). The last
column counts answers by the number of tokens they carried (all should have ``--tokens``; a cut stream has
half, a stream resumed after a cut and replayed from the start has more).

    bash bench/peers/setup_litellm.sh
    .venv/bin/python bench/gateway_faults.py [--requests 2000] [--streams 500] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gateway import FAULT_MODEL, load, machine_note, markdown, parse_peers, stack, upstream_stats


def describe(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--fail-rate", type=float, default=0.3)
    parser.add_argument("--cut-rate", type=float, default=0.1)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--token-ms", type=float, default=5.0)
    parser.add_argument("--peers", default="atrium,atrium-nobreaker,litellm",
                        help="proxies to measure (comma-separated)")
    args = parser.parse_args()
    peers = parse_peers(args.peers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, stack(
            Path(tmp), peers, tokens=args.tokens, token_ms=args.token_ms, fault_model=FAULT_MODEL,
            fail_rate=args.fail_rate, cut_rate=args.cut_rate) as servers:
        upstream = servers["upstream"]
        for side in ["upstream", *peers]:
            server = servers[side]
            for stream, count in ((False, args.requests), (True, args.streams)):
                before = upstream_stats(upstream)
                result = load(server, upstream, requests=count, concurrency=args.concurrency, stream=stream,
                              model=server.fallback_model)
                after = upstream_stats(upstream)
                calls = {k: after.get(k, 0) - before.get(k, 0) for k in ("requests", "failed", "cut")}
                ok = result["outcomes"].get("finished", 0)
                typed = ok + result["outcomes"].get("error_event", 0)
                rows.append([
                    "direct" if side == "upstream" else side, "streams" if stream else "requests", count,
                    f"{100 * ok / count:.1f}%", f"{100 * typed / count:.1f}%" if stream else "-",
                    describe(result["outcomes"]),
                    f"{calls['requests']} ({calls['failed']} 503, {calls['cut']} cut)",
                    f"{result['latency_ms']['p50']:.0f} / {result['latency_ms']['p95']:.0f} ms",
                    ", ".join(f"{k}: {v}" for k, v in sorted(result["tokens"].items(), key=lambda kv: -kv[1])),
                ])
    print(f"bench-model fails {args.fail_rate:.0%} with 503 and cuts {args.cut_rate:.0%} of streams; concurrency "
          f"{args.concurrency}; {machine_note()}\n")
    print(markdown(["side", "kind", "sent", "finished", "typed final event", "outcomes", "upstream calls",
                    "p50 / p95", "answers by token count"], rows))


if __name__ == "__main__":
    main()
