"""Profile a proxy's CPU under the gateway benches' load: py-spy (installed into bench/.venv-litellm by
``uv pip install --python bench/.venv-litellm/bin/python py-spy``) samples the server while bench/loadgen.py
sends ``--requests`` at ``--concurrency``. Writes a speedscope/flamegraph/raw file and prints the top
functions by own and by total samples.

    .venv/bin/python bench/gateway_profile.py --side atrium [--stream] [--requests 3000] [--out prof.txt]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gateway import LITELLM_VENV, load, stack


def summarise(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack_text.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "own:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "total (inclusive):"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["atrium", "litellm"], default="atrium")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--token-ms", type=float, default=0.0, help="pace the upstream's tokens (as gateway_ttft)")
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="keep py-spy's raw (collapsed) output here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), [args.side], token_ms=args.token_ms,
                                                     first_token_ms=args.first_token_ms) as servers:
        server = servers[args.side]
        load(server, servers["upstream"], requests=200, concurrency=args.concurrency, stream=args.stream)
        raw = args.out or Path(tmp) / "profile.txt"
        spy = subprocess.Popen([str(LITELLM_VENV / "bin" / "py-spy"), "record", "--pid", str(server.pid), "--rate",
                                "500", "--format", "raw", "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        result = load(server, servers["upstream"], requests=args.requests, concurrency=args.concurrency,
                      stream=args.stream)
        spy.send_signal(2)
        spy.wait(60)
    print(f"{args.side}: {1000 * result['server_cpu_s'] / result['requests']:.3f} ms CPU per request "
          f"(under py-spy)\n")
    print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
