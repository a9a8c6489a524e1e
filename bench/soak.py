"""Figure (issue 15): a soak -- ``--minutes`` of steady mixed load against one ``atrium serve`` (the embedded
default: SQLite, in-process jobs and pub/sub, the bundled ONNX embedder) whose gateway points at a local
OpenAI-format upstream (bench/upstream_server.py: 32 tokens, first token after 20 ms, 5 ms between tokens).

The load, open loop at fixed rates (each kind on its own schedule, so a slow answer does not slow the rest):

* ``POST /v1/chat/completions`` non-stream (``--chat-rps``) and streamed (``--stream-rps``): a 200
  ``chat.completion``; a stream must end with a ``finish_reason`` chunk and ``data: [DONE]``;
* ``POST /api/v1/search/semantic`` (``--search-rps``), hybrid, over the uploaded documents;
* ``POST /api/v1/documents`` (one small Markdown file every ``--upload-every`` s, its job polled until it
  ends; it must succeed). The files rotate over four names with new text each time, so the corpus stays
  four documents (a re-upload replaces the document and re-embeds its changed chunks) and memory is not
  expected to grow with it;
* ``WS /ws`` (one every ``--ws-every`` s): opened, ``ready`` read, a ``ping`` answered by ``pong``, held
  ``--ws-hold`` s, closed.

Every ``--sample-s`` seconds the server's process tree is read from /proc: VmRSS, open file descriptors, open
handles to the SQLite files (``*.db``; ``-wal``/``-shm`` counted apart) and threads. An error is any
unexpected status, a stream without its terminal event, a failed upload job, a WS that did not answer, an
exception, or a request skipped because too many of its kind were in flight (the server falling behind).

Verdicts (after a warm-up of the first sixth of the run; for 30 minutes: minutes 0-5):

* RSS growth: the mean RSS of the last sixth (minutes 25-30) against the mean of the second sixth (minutes
  5-10); target < 5%;
* file descriptors, SQLite handles and threads: the maximum over the last sixth is not above the maximum
  over the second sixth (fds: plus 4, for sockets in flight at the instant of a sample), nor is the idle
  count read ``--settle-s`` (5) s after the load stops (pools keep their connections open, so idle is not
  expected to fall to the lowest busy count);
* 0 errors.

    .venv/bin/python bench/soak.py [--minutes 30] [--out soak.json] [--embedder onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCH_KEY, atrium_env, start_serve, stop, wait_ready  # noqa: E402
from _gateway import ATRIUM_CONFIG, FAULT_MODEL, HIGH_LIMIT, UPSTREAM_KEY, markdown, start_upstream  # noqa: E402

HEADERS = {"Authorization": f"Bearer {BENCH_KEY}"}
MAX_IN_FLIGHT = 40  # per kind: more means the server is not keeping up with the rate, counted as an error
FD_SLACK = 4
WORDS = ("refund policy shipping invoice latency replica backup migration tenant gateway stream token "
         "budget quota search index vector keyword upload socket presence artifact flow thread").split()
QUERIES = ("how long do refunds take", "backup and migration", "vector index latency", "tenant quota budget",
           "socket presence thread")


def proc_tree(root: int) -> list[int]:
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    queue += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return pids


def sample_process(root: int) -> dict[str, int]:
    """RSS (KiB), fds, SQLite handles and threads, summed over the server's process tree."""
    totals = Counter(processes=0)
    for pid in proc_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        totals["processes"] += 1
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                totals["rss_kib"] += int(line.split()[1])
            elif line.startswith("Threads:"):
                totals["threads"] += int(line.split()[1])
        totals["fds"] += len(fds)
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.endswith(".db"):
                    totals["db_handles"] += 1
                elif target.endswith((".db-wal", ".db-shm", ".db-journal")):
                    totals["db_wal_shm_handles"] += 1
                elif target.startswith("socket:"):
                    totals["sockets"] += 1
    return dict(totals)


class Load:
    """The clients of one run: counts, latencies and errors per kind."""

    def __init__(self, base: str, client: httpx.AsyncClient, upload_timeout: float) -> None:
        self.base, self.client, self.upload_timeout = base, client, upload_timeout
        self.done: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_examples: list[str] = []
        self.latency: dict[str, list[float]] = {}
        self.in_flight: Counter[str] = Counter()
        self.upload_round = 0
        self.rng = random.Random(15)

    def fail(self, kind: str, why: str) -> None:
        self.errors[kind] += 1
        if len(self.error_examples) < 20:
            self.error_examples.append(f"{time.strftime('%H:%M:%S')} {kind}: {why[:300]}")

    async def run_one(self, kind: str, action: Callable[[], Awaitable[None]]) -> None:
        started = time.perf_counter()
        try:
            await action()
        except Exception as exc:  # every failure is counted, with its reason
            self.fail(kind, f"{type(exc).__name__}: {exc}")
        else:
            self.done[kind] += 1
            self.latency.setdefault(kind, []).append(time.perf_counter() - started)
        finally:
            self.in_flight[kind] -= 1

    def body(self, stream: bool) -> dict[str, Any]:
        words = " ".join(self.rng.choices(WORDS, k=12))
        body: dict[str, Any] = {"model": FAULT_MODEL, "max_tokens": 32, "stream": stream,
                                "messages": [{"role": "user", "content": f"Summarise: {words}"}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def chat(self) -> None:
        reply = await self.client.post("/v1/chat/completions", json=self.body(False))
        if reply.status_code != 200 or reply.json().get("object") != "chat.completion":
            raise RuntimeError(f"chat: {reply.status_code} {reply.text[:200]}")

    async def stream(self) -> None:
        async with self.client.stream("POST", "/v1/chat/completions", json=self.body(True)) as reply:
            if reply.status_code != 200:
                raise RuntimeError(f"stream: {reply.status_code} {(await reply.aread())[:200]!r}")
            events = [line async for line in reply.aiter_lines() if line.startswith("data:")]
        if not events or events[-1].strip() != "data: [DONE]":
            raise RuntimeError(f"stream ended without [DONE]: {events[-1:]!r}")
        if not any('"finish_reason":"stop"' in e.replace(" ", "") for e in events) or \
                any('"error"' in e for e in events):
            raise RuntimeError("stream without a finish_reason, or with an error event")

    async def search(self) -> None:
        reply = await self.client.post("/api/v1/search/semantic",
                                       json={"query": self.rng.choice(QUERIES), "limit": 5})
        if reply.status_code != 200 or not isinstance(reply.json().get("results"), list):
            raise RuntimeError(f"search: {reply.status_code} {reply.text[:200]}")

    async def upload(self) -> None:
        self.upload_round += 1
        name = f"soak-{self.upload_round % 4}.md"
        paragraphs = [f"## Part {i}\n\n" + " ".join(self.rng.choices(WORDS, k=60)) for i in range(6)]
        text = f"# Soak document {self.upload_round}\n\n" + "\n\n".join(paragraphs) + "\n"
        reply = await self.client.post("/api/v1/documents", files={"files": (name, text.encode(), "text/markdown")})
        if reply.status_code != 202:
            raise RuntimeError(f"upload: {reply.status_code} {reply.text[:200]}")
        job_id = reply.json()["job_id"]
        deadline = time.monotonic() + self.upload_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            job = await self.client.get(f"/api/v1/jobs/{job_id}")
            if job.status_code != 200:
                raise RuntimeError(f"job: {job.status_code} {job.text[:200]}")
            status = job.json()["status"]
            if status == "succeeded":
                return
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"job {status}: {job.json().get('error')}")
        raise TimeoutError(f"job {job_id} not done after {self.upload_timeout} s")

    async def socket(self, hold: float) -> None:
        ws_url = self.base.replace("http://", "ws://") + "/ws"
        async with connect(ws_url, additional_headers=HEADERS, open_timeout=30, close_timeout=10) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first["type"] != "ready":
                raise RuntimeError(f"ws: first event {first}")
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            while True:  # broadcasts (job events, presence, heartbeats) may come first
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if event["type"] == "pong" and event.get("id") == "p":
                    break
                if event["type"] == "error":
                    raise RuntimeError(f"ws error: {event}")
            await asyncio.sleep(hold)

    async def every(self, kind: str, interval: float, action: Callable[[], Awaitable[None]], until: float,
                    tasks: set[asyncio.Task[None]]) -> None:
        """Start ``action`` every ``interval`` s (open loop, phase jittered) until the monotonic ``until``."""
        start = time.monotonic() + self.rng.random() * interval
        n = 0
        while (at := start + n * interval) < until:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            n += 1
            if self.in_flight[kind] >= MAX_IN_FLIGHT:
                self.fail(kind, f"skipped: {MAX_IN_FLIGHT} already in flight")
                continue
            self.in_flight[kind] += 1
            task = asyncio.create_task(self.run_one(kind, action))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def verdicts(samples: list[dict[str, Any]], idle: dict[str, int], minutes: float) -> dict[str, Any]:
    sixth = minutes * 60 / 6
    base = [s for s in samples if sixth <= s["t"] < 2 * sixth]
    last = [s for s in samples if s["t"] >= 5 * sixth]
    if not base or not last:
        raise SystemExit("too few samples for a verdict: lower --sample-s or raise --minutes")
    rss_base, rss_last = mean([s["rss_kib"] for s in base]), mean([s["rss_kib"] for s in last])
    out: dict[str, Any] = {
        "windows_s": {"warmup": [0, sixth], "baseline": [sixth, 2 * sixth], "final": [5 * sixth, 6 * sixth]},
        "rss_baseline_mib": rss_base / 1024, "rss_final_mib": rss_last / 1024,
        "rss_growth_pct": 100 * (rss_last / rss_base - 1), "rss_max_mib": max(s["rss_kib"] for s in samples) / 1024}
    out["rss_ok"] = out["rss_growth_pct"] < 5.0
    for key, slack in (("fds", FD_SLACK), ("db_handles", 0), ("db_wal_shm_handles", 0), ("threads", 0)):
        b = [s.get(key, 0) for s in base]
        f = [s.get(key, 0) for s in last]
        out[key] = {"baseline_min": min(b), "baseline_max": max(b), "final_min": min(f), "final_max": max(f),
                    "idle_after": idle.get(key, 0),
                    "ok": max(f) <= max(b) + slack and idle.get(key, 0) <= max(b) + slack}
    return out


async def drive(args: argparse.Namespace, base: str, pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60, limits=limits) as client:
        load = Load(base, client, args.upload_timeout)
        # The corpus the searches read, before the clock. The first upload alone: concurrent first uploads
        # into a collection that does not exist yet can race on creating it (one gets 409 conflict).
        await load.upload()
        await asyncio.gather(*(load.upload() for _ in range(3)))
        load.upload_round = 0
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        until = started + args.minutes * 60
        tasks: set[asyncio.Task[None]] = set()
        schedules = [("chat", 1 / args.chat_rps, load.chat), ("stream", 1 / args.stream_rps, load.stream),
                     ("search", 1 / args.search_rps, load.search), ("upload", args.upload_every, load.upload),
                     ("ws", args.ws_every, lambda: load.socket(args.ws_hold))]
        drivers = [asyncio.create_task(load.every(kind, interval, action, until, tasks))
                   for kind, interval, action in schedules]
        loadavg: list[float] = []
        while (now := time.monotonic()) < until:
            sample: dict[str, Any] = {"t": round(now - started, 1), **sample_process(pid),
                                      "requests_done": sum(load.done.values()), "errors": sum(load.errors.values())}
            samples.append(sample)
            loadavg.append(os.getloadavg()[0])
            if args.verbose:
                print(json.dumps(sample), file=sys.stderr, flush=True)
            await asyncio.sleep(min(args.sample_s, max(0.0, until - time.monotonic())))
        await asyncio.gather(*drivers)
        if tasks:
            await asyncio.wait(set(tasks), timeout=args.upload_timeout + 30)
        elapsed = time.monotonic() - started
    await asyncio.sleep(args.settle_s)  # closed sockets and pooled connections settle
    idle = sample_process(pid)
    lat = {k: {"n": len(v), "p50_ms": 1000 * statistics.median(v),
               "p99_ms": 1000 * (statistics.quantiles(v, n=100)[98] if len(v) > 1 else v[0])}
           for k, v in load.latency.items()}
    return {"samples": samples, "idle_after": idle, "elapsed_s": elapsed, "done": dict(load.done),
            "errors": dict(load.errors), "error_examples": load.error_examples, "latency": lat,
            "loadavg_1m": {"mean": mean(loadavg), "max": max(loadavg) if loadavg else None}}


def start_server(tmp: Path, args: argparse.Namespace) -> tuple[Any, Any, str]:
    upstream = start_upstream(tmp, tokens=32, first_token_ms=20, token_ms=5)
    config = tmp / "atrium.yaml"
    config.write_text(ATRIUM_CONFIG.format(upstream=upstream.extra["base"] + "/v1", key=UPSTREAM_KEY))
    env = atrium_env(
        tmp / "data", ATRIUM_CONFIG=str(config), ATRIUM_EMBEDDING__PROVIDER=args.embedder,
        ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false",
        ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE=HIGH_LIMIT, ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE=HIGH_LIMIT,
        ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE=HIGH_LIMIT)
    env["PYTHONPATH"] = str(HERE.parent / "src")  # this tree's Atrium
    if args.model_cache:
        env["ATRIUM_MODEL_CACHE_DIR"] = str(args.model_cache)
    server, url = start_serve(env, tmp / "atrium.log")
    try:
        wait_ready(server, url, timeout=600)
    except Exception:
        stop(server)
        stop(upstream.process)
        raise
    return upstream, server, url


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    v = result["verdicts"]
    rows = [["RSS (mean)", f"{v['rss_baseline_mib']:.1f} MiB", f"{v['rss_final_mib']:.1f} MiB",
             f"{v['rss_growth_pct']:+.2f}% (max {v['rss_max_mib']:.1f} MiB)", "yes" if v["rss_ok"] else "NO"]]
    for key in ("fds", "db_handles", "db_wal_shm_handles", "threads"):
        k = v[key]
        rows.append([key, f"{k['baseline_min']}-{k['baseline_max']}", f"{k['final_min']}-{k['final_max']}",
                     f"idle after: {k['idle_after']}", "yes" if k["ok"] else "NO"])
    errors = sum(result["errors"].values())
    rows.append(["errors", "", "", f"{errors} of {sum(result['done'].values()) + errors} operations",
                 "yes" if errors == 0 else "NO"])
    w = v["windows_s"]
    lines = [f"{args.minutes:g} min soak, {len(result['samples'])} samples every {args.sample_s:g} s; baseline "
             f"window {w['baseline'][0] / 60:.1f}-{w['baseline'][1] / 60:.1f} min, final "
             f"{w['final'][0] / 60:.1f}-{w['final'][1] / 60:.1f} min; {os.cpu_count()} cores, load average (1 min) "
             f"mean {result['loadavg_1m']['mean']:.1f}, max {result['loadavg_1m']['max']:.1f}", "",
             markdown(["", "baseline", "final", "change", "ok"], rows), "",
             markdown(["operation", "done", "errors", "p50", "p99"],
                      [[k, result["done"].get(k, 0), result["errors"].get(k, 0),
                        f"{result['latency'].get(k, {}).get('p50_ms', float('nan')):.0f} ms",
                        f"{result['latency'].get(k, {}).get('p99_ms', float('nan')):.0f} ms"]
                       for k in ("chat", "stream", "search", "upload", "ws")])]
    if result["error_examples"]:
        lines += ["", "errors:"] + [f"- {e}" for e in result["error_examples"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=15.0)
    parser.add_argument("--chat-rps", type=float, default=3.0)
    parser.add_argument("--stream-rps", type=float, default=2.0)
    parser.add_argument("--search-rps", type=float, default=2.0)
    parser.add_argument("--upload-every", type=float, default=15.0)
    parser.add_argument("--ws-every", type=float, default=2.0)
    parser.add_argument("--ws-hold", type=float, default=3.0)
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait after the load before the idle sample")
    parser.add_argument("--upload-timeout", type=float, default=120.0)
    parser.add_argument("--embedder", default="onnx", choices=("onnx", "hash"))
    parser.add_argument("--model-cache", type=Path, default=None, help="ATRIUM_MODEL_CACHE_DIR for the server")
    parser.add_argument("--out", type=Path, default=None, help="the samples and summary as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the data and logs")
    parser.add_argument("--verbose", action="store_true", help="print each sample to stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = args.keep or Path(folder)
        tmp.mkdir(parents=True, exist_ok=True)
        upstream, server, url = start_server(tmp, args)
        try:
            result = asyncio.run(drive(args, url, server.pid))
            result["server_alive"] = server.poll() is None
        finally:
            stop(server)
            stop(upstream.process)
    result["verdicts"] = verdicts(result["samples"], result["idle_after"], args.minutes)
    result["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    v = result["verdicts"]
    result["passed"] = bool(v["rss_ok"] and all(v[k]["ok"] for k in ("fds", "db_handles", "db_wal_shm_handles",
                                                                      "threads"))
                            and not result["errors"] and result["server_alive"])
    text = report(result, args)
    result["summary"] = text
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(text)
    print(f"\npassed: {result['passed']}")


if __name__ == "__main__":
    main()
