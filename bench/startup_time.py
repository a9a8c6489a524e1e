"""Figure: time from ``atrium serve`` to ``/ready`` == 200 on a second start (target <= 10 s).

Side by side in one run: the first start on a new data dir (migrations, admin bootstrap, demo docs,
model assembly if not cached), N second starts, and llama.cpp's own server starting on the same model
file (the floor Atrium cannot go below, since /ready waits for the model).

    .venv/bin/python bench/startup_time.py [--model qwen2.5-coder-1.5b] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atrium_env, free_port, start_serve, stop, wait_ready


def llama_alone(model_file: Path) -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file), "--model_alias", "m", "--port",
         str(port), "--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"OMP_WAIT_POLICY": "PASSIVE", "PATH": ""})
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        env = atrium_env(data_dir, ATRIUM_CHAT__LOCAL_MODEL=args.model)
        log = Path(tmp) / "serve.log"
        process, url = start_serve(env, log)
        first = wait_ready(process, url)
        stop(process)
        seconds = []
        for _ in range(args.repeat):
            process, url = start_serve(env, log)
            seconds.append(wait_ready(process, url))
            stop(process)
        models_dir = Path(env.get("ATRIUM_MODEL_CACHE_DIR", data_dir / "models"))
        model_file = next(models_dir.glob(f"*{args.model.split('-')[-1]}*.gguf"))
        alone = [llama_alone(model_file) for _ in range(args.repeat)]
    print(f"| model | first start | second start (median of {args.repeat}) | max | llama.cpp server alone "
          "(median) | Atrium overhead |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.model} | {first:.2f} s | {statistics.median(seconds):.2f} s | {max(seconds):.2f} s | "
          f"{statistics.median(alone):.2f} s | {statistics.median(seconds) - statistics.median(alone):+.2f} s |")


if __name__ == "__main__":
    main()
