"""Issue 14, figure (b): ``GET /health`` latency while the server ingests large uploads.

Starts ``atrium serve`` (embedded default: SQLite, the bundled ONNX model, the in-process job worker) on a
fresh data dir, then a client thread polls ``/health`` every ``--interval-ms``: first for ``--idle-s``
seconds with nothing else to do (the baseline, same process, same machine load), then while ``--files``
files of ``--kb`` KB (distinct documentation text, bench/_corpus.py) are uploaded through
``POST /api/v1/documents``, one request per file, until every ingest job is done. It reports p50 / p95 /
p99 / max of both phases, the chunks ingested per second, and the server's CPU seconds.

    python bench/health_during_ingest.py [--files 20] [--kb 450]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready  # noqa: E402
from _corpus import cpu_seconds, load_average, write_files  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (f"n={len(values)}, p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms, "
            f"p99 {percentile(values, 99):.1f} ms, max {max(values):.1f} ms")


class Poller(threading.Thread):
    """Polls ``/health`` on its own connection until stopped; latencies in ms."""

    def __init__(self, url: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval_s = url, interval_s
        self.latencies: list[float] = []
        self.failures = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopped.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                self.stopped.wait(self.interval_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--kb", type=int, default=450)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--env", action="append", default=[], help="extra server setting, NAME=VALUE")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp) / "corpus", args.files, args.kb)
        extra = {"ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false", "ATRIUM_CHAT__PROVIDER": "fake",
                 **dict(item.split("=", 1) for item in args.env)}
        process, url = start_serve(atrium_env(Path(tmp) / "data", **extra), Path(tmp) / "serve.log")
        try:
            wait_ready(process, url)
            print(f"load average at start: {load_average()}", flush=True)
            poller = Poller(url, args.interval_ms / 1000)
            poller.start()
            time.sleep(args.idle_s)
            idle = list(poller.latencies)
            cpu0, wall0 = cpu_seconds(process.pid), time.perf_counter()
            jobs = []
            with httpx.Client(timeout=120, headers=headers) as client:
                for path in files:
                    response = client.post(f"{url}/api/v1/documents", data={"collection": "bench"},
                                           files={"files": (path.name, path.read_bytes(), "text/plain")})
                    response.raise_for_status()
                    jobs.append(response.json()["job_id"])
                chunks = 0
                for job_id in jobs:
                    while True:
                        job = client.get(f"{url}/api/v1/jobs/{job_id}").json()
                        if job["status"] in ("succeeded", "failed", "dead", "cancelled"):
                            break
                        time.sleep(0.5)
                    if job["status"] != "succeeded":
                        raise SystemExit(f"job {job_id}: {job}")
                    chunks += int(job["result"]["chunks"])
            wall, cpu = time.perf_counter() - wall0, cpu_seconds(process.pid) - cpu0
            busy = poller.latencies[len(idle):]
            poller.stopped.set()
            poller.join()
            print(f"load average at end: {load_average()}")
            print(f"{args.files} files x {args.kb} KB: {chunks} chunks in {wall:.1f} s ({chunks / wall:.1f} chunks/s), "
                  f"server CPU {cpu:.1f} s ({cpu / wall:.2f} cores busy on average)")
            print(f"/health idle:      {summary(idle)}")
            print(f"/health ingesting: {summary(busy)}; failed polls: {poller.failures}")
            print(f"/health ingesting, mean {statistics.mean(busy):.1f} ms")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
