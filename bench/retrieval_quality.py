"""Retrieval quality of keyword, vector and hybrid search on the FAQ eval set, measured over HTTP.

Runs Atrium as a user would: ``atrium ingest`` the corpus into a fresh data dir, ``atrium serve`` on a
free port, then one ``POST /api/v1/search/semantic`` per question and mode. Judged per document: results
are deduplicated by ``source`` (first occurrence kept); a question's rank is that of its first gold page.
Reports R@5 (a gold page among the first 5 distinct pages), MRR@10 and the mean search latency per mode.

Usage::

    python bench/retrieval_quality.py --out results.json              # Django FAQ (built if needed)
    python bench/retrieval_quality.py --sources all --out results.json  # + SQLAlchemy, Scrapy, Celery
    ATRIUM_KNOWLEDGE__FUSION=rrf BENCH_API_KEY=... python bench/retrieval_quality.py --data-dir DIR ...
        # an already ingested data dir, searched with another hybrid fusion (docs/benchmarks.md, issue 14)
    ATRIUM_KNOWLEDGE__CHUNKER=window python bench/retrieval_quality.py --sources scrapy  # the other chunker
    ATRIUM_EMBEDDING__MODEL_PATH=M/model.onnx ATRIUM_EMBEDDING__TOKENIZER_PATH=M/tokenizer.json \
        ATRIUM_EMBEDDING__POOLING=mean python bench/retrieval_quality.py --sources all   # another model

Datasets come from bench/retrieval_eval/build_dataset.py (see there for what the questions are). Each
project is ingested into its own collection, named after it, and its questions are searched there;
metrics are pooled over all questions and also given per project.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_CACHE_DIR = BENCH_DIR / ".cache" / "retrieval_eval"
MODES = ("keyword", "vector", "hybrid")


def build_dataset_module():
    """bench/retrieval_eval/build_dataset.py, imported whether or not bench/ is on the path."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    from retrieval_eval import build_dataset

    return build_dataset


def load_dataset(dataset_dir: Path) -> tuple[list[dict], dict]:
    with (dataset_dir / "questions.jsonl").open(encoding="utf-8") as f:
        questions = [json.loads(line) for line in f if line.strip()]
    manifest = json.loads((dataset_dir / "manifest.json").read_text(encoding="utf-8"))
    return questions, manifest


def distinct_sources(results: list[dict]) -> list[str]:
    """Result sources in rank order, each page once (its best-ranked chunk)."""
    seen: list[str] = []
    for result in results:
        source = str(result["source"]).replace("\\", "/").removeprefix("./")
        if source not in seen:
            seen.append(source)
    return seen


def gold_rank(sources: list[str], gold: list[str]) -> int | None:
    """1-based rank of the first gold page among distinct ``sources``, or None."""
    for rank, source in enumerate(sources, start=1):
        if source in gold:
            return rank
    return None


def summarize(ranks: list[int | None], latencies_ms: list[float], distinct_counts: list[int]) -> dict:
    n = len(ranks)
    return {
        "questions": n,
        "recall_at_1": sum(r == 1 for r in ranks) / n,
        "recall_at_5": sum(r is not None and r <= 5 for r in ranks) / n,
        "recall_at_10": sum(r is not None and r <= 10 for r in ranks) / n,
        "mrr_at_10": sum(1 / r for r in ranks if r is not None and r <= 10) / n,
        "latency_ms_mean": statistics.fmean(latencies_ms),
        "latency_ms_p50": statistics.median(latencies_ms),
        "distinct_docs_mean": statistics.fmean(distinct_counts),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ingest(atrium: str, corpus: Path, collection: str, env: dict[str, str]) -> dict:
    command = [atrium, "ingest", str(corpus), "--collection", collection]
    print("$", " ".join(command), flush=True)
    cpu0, t0 = child_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t0, child_cpu_seconds() - cpu0
    output = (proc.stdout + proc.stderr).strip()
    last = output.splitlines()[-3:] if output else []
    print("\n".join(last), flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"atrium ingest failed (exit {proc.returncode}):\n{output[-4000:]}")
    counts = re.search(r"(\d+) documents, (\d+) chunks", output)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "documents": int(counts.group(1)) if counts else None,
        "chunks": int(counts.group(2)) if counts else None,
    }


def start_server(atrium: str, port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [atrium, "serve", "--host", "127.0.0.1", "--port", str(port)]
    print("$", " ".join(command), f"(log: {log_path})", flush=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"atrium serve exited with {server.returncode}:\n{tail(log_path)}")
        try:
            response = client.get("/ready", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout:.0f} s (last: {last}):\n{tail(log_path)}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# How a mode named "<mode>+rerank" is asked for: "body" sends mode <mode> with "rerank": true, "mode" sends
# the name as the mode itself (set by --rerank-style; whichever the API exposes).
RERANK_STYLE = {"style": "body"}


def request_body(query: str, mode: str, collection: str, limit: int) -> dict:
    """The search request of ``mode``; ``hybrid+rerank`` and the like per ``RERANK_STYLE``."""
    body: dict = {"query": query, "limit": limit, "collection": collection, "mode": mode}
    if mode.endswith("+rerank") and RERANK_STYLE["style"] == "body":
        body.update(mode=mode.removesuffix("+rerank"), rerank=True)
    return body


def search(client: httpx.Client, query: str, mode: str, collection: str, limit: int) -> tuple[dict, float]:
    body = request_body(query, mode, collection, limit)
    t0 = time.perf_counter()
    response = client.post("/api/v1/search/semantic", json=body)
    elapsed_ms = (time.perf_counter() - t0) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"search {mode!r} failed: {response.status_code} {response.text[:500]}")
    return response.json(), elapsed_ms


def evaluate(client: httpx.Client, questions: list[dict], modes: list[str], limit: int) -> list[dict]:
    """One search per question and mode, in the question's project collection; a row per question."""
    for project in sorted({q["project"] for q in questions}):
        for mode in modes:  # warm-up, not measured
            search(client, "warm up", mode, project, limit)
    per_question = []
    for i, question in enumerate(questions):
        row: dict = {
            "id": question["id"],
            "project": question["project"],
            "question": question["question"],
            "gold": question["gold"],
        }
        # Rotate the mode order so that no mode always runs first (caches, noisy neighbours).
        for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
            payload, elapsed_ms = search(client, question["question"], mode, question["project"], limit)
            sources = distinct_sources(payload["results"])
            row[mode] = {
                "rank": gold_rank(sources, question["gold"]),
                "distinct_docs": len(sources),
                "top": sources[:5],
                "latency_ms": round(elapsed_ms, 1),
            }
        per_question.append(row)
    return per_question


def summarize_rows(rows: list[dict], modes: list[str]) -> dict:
    return {
        mode: summarize(
            [r[mode]["rank"] for r in rows],
            [r[mode]["latency_ms"] for r in rows],
            [r[mode]["distinct_docs"] for r in rows],
        )
        for mode in modes
    }


def paired(per_question: list[dict], a: str, b: str) -> dict[str, int]:
    """Questions where ``a`` ranks a gold page better / worse than ``b`` (reciprocal rank within 10)."""

    def rr(row: dict, mode: str) -> float:
        rank = row[mode]["rank"]
        return 1 / rank if rank is not None and rank <= 10 else 0.0

    better = sum(rr(row, a) > rr(row, b) for row in per_question)
    worse = sum(rr(row, a) < rr(row, b) for row in per_question)
    return {"better": better, "worse": worse, "tied": len(per_question) - better - worse}


def markdown(summary: dict, by_project: dict, per_question: list[dict], manifests: dict, ingest: dict) -> str:
    n = len(per_question)
    datasets = "; ".join(
        f"{name}: {m['questions']} questions, {m['corpus_files']} pages ({m['corpus_bytes'] / 1e6:.2f} MB), "
        f"{ingest[name]['chunks'] if name in ingest else '?'} chunks"
        for name, m in manifests.items()
    )
    lines = [
        f"FAQ questions with their own gold pages ({datasets}); each project in its own collection.",
        "",
        "| mode | R@1 | R@5 | MRR@10 | R@10 | mean latency (ms) | p50 latency (ms) | distinct docs in top 10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        lines.append(
            f"| {mode} | {s['recall_at_1']:.3f} | {s['recall_at_5']:.3f} | {s['mrr_at_10']:.3f} | "
            f"{s['recall_at_10']:.3f} | "
            f"{s['latency_ms_mean']:.1f} | {s['latency_ms_p50']:.1f} | {s['distinct_docs_mean']:.1f} |"
        )
    if len(by_project) > 1:
        modes = list(summary)
        lines += [
            "",
            "| project (questions) | " + " | ".join(f"{m} R@1 / R@5 / MRR@10" for m in modes) + " |",
            "|---|" + "---|" * len(modes),
        ]
        for project, stats in by_project.items():
            cells = " | ".join(f"{stats[m]['recall_at_1']:.3f} / {stats[m]['recall_at_5']:.3f} / "
                               f"{stats[m]['mrr_at_10']:.3f}" for m in modes)
            lines.append(f"| {project} ({stats[modes[0]]['questions']}) | {cells} |")
    if "hybrid" in summary:
        lines.append("")
        for other in (m for m in summary if m != "hybrid"):
            p = paired(per_question, "hybrid", other)
            lines.append(
                f"hybrid vs {other}, per question (reciprocal rank): better on {p['better']}, "
                f"worse on {p['worse']}, tied on {p['tied']} of {n}."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Retrieval quality (R@5, MRR@10) over Atrium's HTTP API.")
    parser.add_argument("--sources", default="django", help="django (default), a comma-separated list, or all")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated; e.g. keyword,vector,hybrid,hybrid+rerank once the API reranks")
    parser.add_argument("--rerank-style", choices=("body", "mode"), default="body",
                        help='"X+rerank" as mode X with "rerank": true (body), or as the mode name itself')
    parser.add_argument("--limit", type=int, default=10, help="chunks requested per search")
    parser.add_argument("--atrium", default=str(REPO_DIR / ".venv" / "bin" / "atrium"))
    parser.add_argument("--ready-timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="an existing data dir with every project already ingested into its collection: "
                             "no ingestion, kept afterwards (e.g. to compare knowledge.fusion settings)")
    args = parser.parse_args(argv)

    RERANK_STYLE["style"] = args.rerank_style
    build_dataset = build_dataset_module()
    try:
        sources = build_dataset.parse_sources(args.sources)
    except ValueError as exc:
        parser.error(str(exc))
    cache_dir = args.cache_dir.resolve()
    questions: list[dict] = []
    manifests: dict[str, dict] = {}
    for source in sources:
        dataset_dir = cache_dir / source.name
        if not (dataset_dir / "questions.jsonl").exists() or not (dataset_dir / "manifest.json").exists():
            build_dataset.build(source, cache_dir)
        source_questions, manifests[source.name] = load_dataset(dataset_dir)
        questions.extend(source_questions)
    modes = [m.strip() for m in args.modes.split(",")]

    reuse = args.data_dir is not None
    data_dir = args.data_dir.resolve() if reuse else Path(tempfile.mkdtemp(prefix="atrium-retrieval-eval-"))
    # A reused data dir already has its admin: give its key (``atrium keys create``) in BENCH_API_KEY.
    admin_key = os.environ.get("BENCH_API_KEY") or "atr_" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    env = {
        # A stray ATRIUM_* setting in the caller's shell must not change what is measured.
        **{k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")},
        "ATRIUM_DATA_DIR": str(data_dir),
        "ATRIUM_BOOTSTRAP_ADMIN_KEY": admin_key,
        "ATRIUM_CHAT__PROVIDER": "fake",
        "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
        # One key sends every search (4 modes x 150 questions can pass 600 a minute on a quiet machine).
        "ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE": "1000000",
        "ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE": "1000000",
        "ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE": "1000000",
        # Hybrid's fusion, a reranker's settings and the embedding model may be chosen from the caller's shell
        # (ATRIUM_* is otherwise dropped above).
        **{k: v for k, v in os.environ.items()
           if k.startswith(("ATRIUM_KNOWLEDGE__", "ATRIUM_RERANK", "ATRIUM_EMBEDDING__"))},
    }
    server = None
    try:
        ingest = {} if reuse else {
            source.name: run_ingest(args.atrium, cache_dir / source.name / "corpus", source.name, env)
            for source in sources
        }
        port = free_port()
        log_path = data_dir / "serve.log"
        server = start_server(args.atrium, port, env, log_path)
        headers = {"Authorization": f"Bearer {admin_key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as client:
            wait_ready(client, server, log_path, args.ready_timeout)
            per_question = evaluate(client, questions, modes, args.limit)
    finally:
        if server is not None:
            stop_server(server)
        if args.keep_data or reuse:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    summary = summarize_rows(per_question, modes)
    by_project = {name: summarize_rows([r for r in per_question if r["project"] == name], modes) for name in manifests}
    table = markdown(summary, by_project, per_question, manifests, ingest)
    print()
    print(table)
    if args.out is not None:
        result = {
            "command": " ".join(["python", *sys.argv]),
            "datasets": manifests,
            "limit": args.limit,
            "fusion": {k: v for k, v in env.items() if k.startswith("ATRIUM_KNOWLEDGE__")},
            "ingest": ingest,
            "summary": summary,
            "by_project": by_project,
            "paired_vs_hybrid": {
                m: paired(per_question, "hybrid", m) for m in modes if m != "hybrid" and "hybrid" in modes
            },
            "per_question": per_question,
            "markdown": table,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
