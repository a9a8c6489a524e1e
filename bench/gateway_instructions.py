"""Figure: CPU instructions per non-stream ``/v1/chat/completions`` call, two source trees side by side,
counted by Valgrind (callgrind) rather than timed, so that other work on a shared machine does not move it.

Each side runs in its own process under ``valgrind --tool=callgrind --instr-atstart=no``: the app is built
in process (``create_app``, the gateway benches' catalogue and limits, ``bench/_gateway.py``), warmed up,
and only the measured requests are counted (``callgrind_control -i on/off`` around them). Requests go through
httpx's ASGI transport (its client work is counted too, the same on both sides) to the app, which calls
the local upstream (``bench/upstream_server.py``, not counted) over the real network stack. What a timed
run cannot tell apart from noise (1-3%), this shows within about 1%.

Under Valgrind a call takes ~50x longer: the attempt timeouts are raised and the breaker cannot open, and
the disconnect watcher (a task after 0.2 s of a call) is pushed out, so the counted path is the one a
fast call takes. ``hnswlib`` is replaced by a stub (Valgrind cannot decode its AVX-512 code; these calls
never search). Needs ``valgrind`` on PATH.

    .venv/bin/python bench/gateway_instructions.py --before-src ../atrium-before/src --after-src src \\
        [--requests 500] [--concurrency 50] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY  # noqa: E402
from _gateway import ATRIUM_CONFIG, HIGH_LIMIT, UPSTREAM_KEY, start_upstream, stop  # noqa: E402

WARMUP = 300


def child(args: argparse.Namespace) -> None:
    """Inside Valgrind: build the app from the tree on PYTHONPATH and count ``--requests`` calls."""
    stub = types.ModuleType("hnswlib")
    stub.Index = None  # type: ignore[attr-defined]
    sys.modules["hnswlib"] = stub
    tmp = Path(tempfile.mkdtemp(prefix="gw-instructions-"))
    config = tmp / "atrium.yaml"
    config.write_text(ATRIUM_CONFIG.format(upstream=args.upstream + "/v1", key=UPSTREAM_KEY))
    os.environ.update({
        "ATRIUM_DATA_DIR": str(tmp / "data"), "ATRIUM_BOOTSTRAP_ADMIN_KEY": BENCH_KEY, "ATRIUM_CONFIG": str(config),
        "ATRIUM_EMBEDDING__PROVIDER": "hash", "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
        "ATRIUM_CHAT__PROVIDER": "fake", "ATRIUM_RATE_LIMITS__ENABLED": "true",
        "ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE": HIGH_LIMIT,
        "ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE": HIGH_LIMIT,
        "ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE": HIGH_LIMIT,
        "ATRIUM_GATEWAY__ATTEMPT_TIMEOUT_S": "300", "ATRIUM_GATEWAY__TOTAL_TIMEOUT_S": "600",
        "ATRIUM_GATEWAY__BREAKER__FAILURE_THRESHOLD": "1000000000"})
    import httpx

    import atrium.http.compat.streams as compat_streams
    from atrium.app import create_app

    compat_streams.WATCH_DISCONNECT_AFTER_S = 1000.0  # type: ignore[misc]
    body = json.dumps({"model": "bench-model", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Say hello"}]}).encode()
    headers = {"authorization": f"Bearer {BENCH_KEY}", "content-type": "application/json"}

    async def run() -> None:
        app = create_app()
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://atrium") as client:
            async def calls(count: int) -> None:
                for _ in range(count):
                    response = await client.post("/v1/chat/completions", content=body, headers=headers)
                    if response.status_code != 200:
                        raise SystemExit(f"HTTP {response.status_code}: {response.text}")

            await calls(WARMUP)
            instrument("on")  # blocks the loop for a moment: nothing runs meanwhile, which is the point
            per_worker = args.requests // args.concurrency
            await asyncio.gather(*(calls(per_worker) for _ in range(args.concurrency)))
            instrument("off")

    asyncio.run(run())


def instrument(state: str) -> None:
    """Switch callgrind's counting in this process on or off."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def count(source: Path, upstream: str, args: argparse.Namespace, tmp: Path, name: str) -> float:
    """Instructions per request of the tree at ``source``."""
    log = tmp / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{HERE}", "PYTHONHASHSEED": "0"}
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp / name}.out",
                    sys.executable, "-W", "ignore", str(Path(__file__).resolve()), "--child", "--upstream", upstream,
                    "--requests", str(args.requests), "--concurrency", str(args.concurrency)],
                   env=env, check=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise SystemExit(f"no instruction count in {log}")
    return int(found.group(1)) / (args.requests // args.concurrency * args.concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", type=Path, help="source tree (its src/) of the 'before' side")
    parser.add_argument("--after-src", type=Path, help="source tree of the 'after' side")
    parser.add_argument("--requests", type=int, default=500, help="counted requests per side and round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="each round ~1.5 min on 2 cores")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    if args.before_src is None or args.after_src is None:
        raise SystemExit("--before-src and --after-src are required")
    sides = {"after": args.after_src.resolve(), "before": args.before_src.resolve()}
    counts: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        upstream = start_upstream(tmp)
        try:
            for turn in range(args.rounds):
                # both sides of a round at once (one core each): instruction counts do not depend on timing
                order = list(sides) if turn % 2 == 0 else list(reversed(sides))
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    futures = {side: pool.submit(count, sides[side], upstream.extra["base"], args, tmp,
                                                 f"{side}-{turn}") for side in order}
                    for side, future in futures.items():
                        counts[side].append(future.result())
        finally:
            stop(upstream.process)
    print(f"Instructions per non-stream call, concurrency {args.concurrency}, {args.requests} counted calls per "
          f"side and round, {args.rounds} rounds (each: " +
          ", ".join(f"{side} {' / '.join(f'{c / 1e6:.3f}M' for c in counts[side])}" for side in sides) + ")")
    after, before = statistics.median(counts["after"]), statistics.median(counts["before"])
    print(f"median: after {after / 1e6:.3f}M, before {before / 1e6:.3f}M, after / before {after / before:.3f}x")


if __name__ == "__main__":
    main()
