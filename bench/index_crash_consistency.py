"""Figure: the vector index stays consistent with the database after ``kill -9`` during ingestion.

Each trial starts an ingestion, kills it with SIGKILL at a random moment, then:
1. ``atrium index check`` on the files as the crash left them (may differ: that is what a crash does);
2. a restart (``atrium serve`` to ready, then stop), which reconciles the index with the database;
3. ``atrium index check`` again: it must report no difference, every time.

Two ways to crash: ``cli`` kills ``atrium ingest``; ``server`` kills ``atrium serve`` while its job worker
ingests an upload and saves the index continuously (``index_save_interval_s=0``), to hit saves mid-write.

    .venv/bin/python bench/index_crash_consistency.py [--trials 10] [--docs 300]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_KEY, atrium_bin, atrium_env, start_serve, stop, wait_ready

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "service",
    "replica",
    "backup",
    "schedule",
    "invoice",
    "refund",
    "cluster",
    "index",
    "vector",
    "token",
    "tenant",
    "budget",
    "stream",
    "queue",
    "worker",
    "router",
    "provider",
    "model",
    "cache",
    "limit",
    "policy",
    "audit",
    "metric",
    "trace",
]


def make_corpus(folder: Path, docs: int, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(docs):
        sections = []
        for section in range(4):
            paragraph = " ".join(rng.choice(WORDS) for _ in range(120))
            sections.append(f"## Section {section}\n\n{paragraph}.\n")
        (folder / f"doc-{seed}-{number:04d}.md").write_text(f"# Document {number}\n\n" + "\n".join(sections))


def index_check(env: dict[str, str]) -> bool:
    result = subprocess.run([atrium_bin(), "index", "check"], env=env, capture_output=True, text=True, timeout=600)
    return result.returncode == 0


def restart(env: dict[str, str], log: Path) -> None:
    process, url = start_serve(env, log)
    wait_ready(process, url)
    stop(process)


def crash_cli(env: dict[str, str], corpus: Path, rng: random.Random) -> None:
    process = subprocess.Popen(
        [atrium_bin(), "ingest", str(corpus), "--collection", "crash"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(1.5, 8.0))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def crash_server(env: dict[str, str], corpus: Path, rng: random.Random, log: Path) -> None:
    process, url = start_serve(env, log)
    wait_ready(process, url)
    files = sorted(corpus.glob("*.md"))[:20]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {BENCH_KEY}"}, timeout=60) as client:
        for start in range(0, len(files), 5):
            batch = [("files", (path.name, path.read_bytes(), "text/markdown")) for path in files[start : start + 5]]
            client.post("/api/v1/documents", data={"collection": "upload"}, files=batch).raise_for_status()
    time.sleep(rng.uniform(0.5, 5.0))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = atrium_env(
            Path(tmp) / "data",
            ATRIUM_CHAT__PROVIDER="fake",
            ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false",
            ATRIUM_KNOWLEDGE__INDEX_SAVE_INTERVAL_S="0",
            ATRIUM_KNOWLEDGE__RECONCILE_INTERVAL_S="0.2",
        )
        log = Path(tmp) / "serve.log"
        for trial in range(args.trials):
            corpus = Path(tmp) / f"corpus-{trial}"
            make_corpus(corpus, args.docs, seed=trial)
            mode = "cli" if trial % 2 == 0 else "server"
            if mode == "cli":
                crash_cli(env, corpus, rng)
            else:
                crash_server(env, corpus, rng, log)
            consistent_on_disk = index_check(env)
            restart(env, log)
            consistent_after_restart = index_check(env)
            rows.append((trial, mode, consistent_on_disk, consistent_after_restart))
            print(
                f"trial {trial} ({mode}): files as left by the crash consistent={consistent_on_disk}, "
                f"after restart consistent={consistent_after_restart}",
                flush=True,
            )
    after = sum(row[3] for row in rows)
    before = sum(row[2] for row in rows)
    print("\n| trials | crashes that left index != DB on disk | consistent after restart |")
    print("|---|---|---|")
    print(
        f"| {len(rows)} ({sum(r[1] == 'cli' for r in rows)} cli, {sum(r[1] == 'server' for r in rows)} server) "
        f"| {len(rows) - before} | {after}/{len(rows)} |"
    )
    if after != len(rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
