"""Issue 14, figure (b): ``GET /health`` latency while the server ingests large uploads.

Starts ``atrium serve`` (embedded default: SQLite, the bundled ONNX model, the in-process job worker) on a
fresh data dir, then a client thread polls ``/health`` every ``--interval-ms``: first for ``--idle-s``
seconds with nothing else to do (the baseline, same process, same machine load), then while ``--files``
files of ``--kb`` KB (distinct documentation text, bench/_corpus.py) are uploaded through
``POST /api/v1/documents``, one request per file, until every ingest job is done. It reports p50 / p95 /
p99 / max of both phases, the chunks ingested per second, and the server's CPU seconds.

With ``--search-every-ms N`` a second client thread also searches (``POST /api/v1/search/semantic``, hybrid,
a dev-set question made unique by a number, so no answer comes from a cache) every N ms in both phases, on a
small collection ingested before the idle phase: whether ingestion slows searches (issue 14: "embeds on every
core without slowing searches").

    python bench/health_during_ingest.py [--files 20] [--kb 450] [--search-every-ms 100]
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


QUESTIONS = ["how do I retry a failed task", "what is the default timeout of a request", "where are settings read from",
             "how to configure logging for workers", "can a spider follow links on another domain",
             "why does the scheduler skip a job", "how are results stored", "what does the middleware order mean"]


class Searcher(Poller):
    """Searches the ``seed`` collection on its own connection until stopped; latencies in ms."""

    def __init__(self, url: str, interval_s: float, headers: dict[str, str]) -> None:
        super().__init__(url, interval_s)
        self.headers = headers

    def run(self) -> None:
        number = 0
        with httpx.Client(timeout=30, headers=self.headers) as client:
            while not self.stopped.is_set():
                number += 1
                question = f"{QUESTIONS[number % len(QUESTIONS)]} {number}"
                started = time.perf_counter()
                response = client.post(f"{self.url}/api/v1/search/semantic",
                                       json={"query": question, "collection": "seed", "limit": 5})
                if response.status_code == 200 and response.json()["results"]:
                    self.latencies.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                self.stopped.wait(self.interval_s)


def ingest_seed(client: httpx.Client, url: str, path: Path) -> None:
    """The searches' collection: one file, ingested before anything is timed."""
    response = client.post(f"{url}/api/v1/documents", data={"collection": "seed"},
                           files={"files": (path.name, path.read_bytes(), "text/plain")})
    response.raise_for_status()
    job_id = response.json()["job_id"]
    while (job := client.get(f"{url}/api/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        time.sleep(0.2)
    if job["status"] != "succeeded":
        raise SystemExit(f"seed job: {job}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--kb", type=int, default=450)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--env", action="append", default=[], help="extra server setting, NAME=VALUE")
    parser.add_argument("--search-every-ms", type=float, default=0.0, help="also search this often (0: never)")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp) / "corpus", args.files + 1, args.kb)
        seed, files = files[0], files[1:]
        extra = {"ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false", "ATRIUM_CHAT__PROVIDER": "fake",
                 **dict(item.split("=", 1) for item in args.env)}
        process, url = start_serve(atrium_env(Path(tmp) / "data", **extra), Path(tmp) / "serve.log")
        try:
            wait_ready(process, url)
            searcher = None
            if args.search_every_ms > 0:
                with httpx.Client(timeout=120, headers=headers) as client:
                    ingest_seed(client, url, seed)
                searcher = Searcher(url, args.search_every_ms / 1000, headers)
            print(f"load average at start: {load_average()}", flush=True)
            poller = Poller(url, args.interval_ms / 1000)
            poller.start()
            if searcher is not None:
                searcher.start()
            time.sleep(args.idle_s)
            idle = list(poller.latencies)
            idle_searches = list(searcher.latencies) if searcher is not None else []
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
            if searcher is not None:
                searcher.stopped.set()
                searcher.join()
            print(f"load average at end: {load_average()}")
            print(f"{args.files} files x {args.kb} KB: {chunks} chunks in {wall:.1f} s ({chunks / wall:.1f} chunks/s), "
                  f"server CPU {cpu:.1f} s ({cpu / wall:.2f} cores busy on average)")
            print(f"/health idle:      {summary(idle)}")
            print(f"/health ingesting: {summary(busy)}; failed polls: {poller.failures}")
            print(f"/health ingesting, mean {statistics.mean(busy):.1f} ms")
            if searcher is not None:
                busy_searches = searcher.latencies[len(idle_searches):]
                print(f"search idle:       {summary(idle_searches)}")
                print(f"search ingesting:  {summary(busy_searches)}; failed searches: {searcher.failures}")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
