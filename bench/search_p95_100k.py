"""Search latency through the API at 100k chunks (issue 14 target: p95 <= 60 ms, query embedding included).

Builds a collection of ``--chunks`` chunks fast, then times ``POST /api/v1/search/semantic`` of a real
``atrium serve`` over HTTP, per mode and concurrency.

Building: embedding 100k chunks with the bundled ONNX model takes about an hour on 2 cores, so the corpus is
made from a small real one. ``--seed`` projects of the FAQ dev sets (bench/retrieval_eval) are ingested with
``atrium ingest`` (real ONNX embeddings, real chunker) into the collection ``seed``; then their document and
chunk rows are copied straight into SQLite (collection ``big``) until it holds ``--chunks`` chunks. A copy
keeps its text (so the FTS5 index and the BM25 posting lists grow as a real corpus' would for its common
words, and are longer than real for its rare ones: pessimistic for keyword search) and gets its vector plus
Gaussian noise, renormalised (cosine about 0.9 to the original), so the HNSW index holds 100k distinct
vectors clustered like real text. The FTS5 triggers index each copied row as ``atrium ingest`` would; the
server's start-up reconciliation builds the HNSW index from the rows' embeddings. Queries are the dev sets'
FAQ questions, each made unique by an appended word of the corpus (no repeated query can be served from a
cache), embedded by the server with the real ONNX model.

With ``--quality``, the seed projects' FAQ questions are also asked in the big collection and judged by page
(any copy of a gold page counts): a check that what makes search fast at this size does not lose answers.

Measured per (mode, concurrency): ``--queries`` searches after 10 warm-up ones, p50/p95/p99 of the client-side
latency, throughput, and the server process' CPU time per search (from /proc).

Usage::

    python bench/retrieval_eval/build_dataset.py --sources scrapy,celery
    python bench/search_p95_100k.py --out p95.json            # builds in a temp dir, removed afterwards
    python bench/search_p95_100k.py --data-dir /tmp/p95 --keep-data   # build once, re-measure later
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import string
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psutil

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import retrieval_quality as rq  # noqa: E402

SEED_COLLECTION, BIG_COLLECTION = "seed", "big"


def noisy(blobs: list[bytes], noise: float, rng: np.random.Generator) -> np.ndarray:
    """The vectors of ``blobs`` plus Gaussian noise of norm about ``noise``, renormalised."""
    dim = len(blobs[0]) // 4
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)
    vectors = vectors + rng.normal(0.0, noise / np.sqrt(dim), vectors.shape).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build_big(db_path: Path, target: int, noise: float, rng: np.random.Generator,
              seeds: tuple[str, ...] = (SEED_COLLECTION,)) -> dict:
    """Copy the ``seeds`` collections' documents and chunks into ``big`` until it holds ``target`` chunks.
    Reranking vectors, where the seed chunks have them, are copied with noise as the embeddings are."""
    con = sqlite3.connect(db_path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        have = con.execute("SELECT count(*) FROM chunks WHERE collection = ?", (BIG_COLLECTION,)).fetchone()[0]
        if have >= target:
            return {"chunks": have, "copied": 0}
        marks = ", ".join("?" * len(seeds))
        org = con.execute("SELECT org_id FROM collections WHERE name = ?", (seeds[0],)).fetchone()[0]
        collection_columns = [row[1] for row in con.execute("PRAGMA table_info(collections)")]
        if con.execute("SELECT 1 FROM collections WHERE name = ?", (BIG_COLLECTION,)).fetchone() is None:
            values = ", ".join("?" if c in ("id", "name") else c for c in collection_columns)
            con.execute(f"INSERT INTO collections ({', '.join(collection_columns)}) SELECT {values} "
                        "FROM collections WHERE name = ?", (uuid.uuid4().hex, BIG_COLLECTION, seeds[0]))
        doc_columns = [row[1] for row in con.execute("PRAGMA table_info(documents)")]
        docs = con.execute(f"SELECT {', '.join(doc_columns)} FROM documents WHERE collection IN ({marks})",
                           seeds).fetchall()
        reranking = "rerank_embedding" in {row[1] for row in con.execute("PRAGMA table_info(chunks)")}
        chunk_rows = con.execute(
            "SELECT document_id, ordinal, heading, text, token_count, embedding"
            + (", rerank_embedding" if reranking else ", NULL")
            + f" FROM chunks WHERE collection IN ({marks}) ORDER BY id", seeds).fetchall()
        by_doc: dict[str, list[tuple]] = {}
        for row in chunk_rows:
            by_doc.setdefault(row[0], []).append(row)
        copy = have // max(len(chunk_rows), 1)
        added = 0
        while have + added < target:
            copy += 1
            for doc in docs:
                pieces = by_doc.get(doc[doc_columns.index("id")], [])
                if not pieces or have + added >= target:
                    continue
                record = dict(zip(doc_columns, doc, strict=True))
                new_id = uuid.uuid4().hex
                record.update(id=new_id, collection=BIG_COLLECTION, source=f"copy{copy:03d}/{record['source']}")
                con.execute(f"INSERT INTO documents ({', '.join(record)}) VALUES ({', '.join('?' * len(record))})",
                            list(record.values()))
                vectors = noisy([p[5] for p in pieces], noise, rng)
                rerank = noisy([p[6] for p in pieces], noise, rng) if all(p[6] for p in pieces) else None
                con.executemany(
                    "INSERT INTO chunks (org_id, document_id, collection, ordinal, heading, text, token_count, "
                    "embedding" + (", rerank_embedding" if reranking else "") + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?"
                    + (", ?" if reranking else "") + ")",
                    [(org, new_id, BIG_COLLECTION, p[1], p[2], p[3], p[4], vectors[i].tobytes())
                     + ((rerank[i].tobytes() if rerank is not None else None,) if reranking else ())
                     for i, p in enumerate(pieces)])
                added += len(pieces)
        con.execute("UPDATE knowledge_revisions SET revision = revision + 1 WHERE org_id = ?", (org,))
        con.commit()
        return {"chunks": have + added, "copied": added, "seed_chunks": len(chunk_rows), "copies": copy}
    finally:
        con.close()


def corpus_words(db_path: Path, rng: random.Random, n: int = 5000,
                 seeds: tuple[str, ...] = (SEED_COLLECTION,)) -> list[str]:
    con = sqlite3.connect(db_path)
    try:
        texts = [row[0] for row in con.execute(
            f"SELECT text FROM chunks WHERE collection IN ({', '.join('?' * len(seeds))}) LIMIT 2000", seeds)]
    finally:
        con.close()
    words = sorted({w for t in texts for w in t.split() if w.isalpha() and 4 <= len(w) <= 12})
    return rng.sample(words, min(n, len(words)))


def proc_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def run_batch(base_url: str, headers: dict, queries: list[str], mode: str, concurrency: int,
                    limit: int) -> tuple[list[float], float]:
    """Every query once with ``concurrency`` requests in flight; latencies (ms) and the wall time (s)."""
    latencies: list[float] = []
    pending = list(queries)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        async def worker() -> None:
            while pending:
                query = pending.pop()
                body = rq.request_body(query, mode, BIG_COLLECTION, limit)
                if RERANK_EXPLICIT["on"] and not mode.endswith("+rerank"):
                    body["rerank"] = False
                t0 = time.perf_counter()
                response = await client.post("/api/v1/search/semantic", json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{mode}: {response.status_code} {response.text[:300]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - t0


def quality_at_scale(base_url: str, headers: dict, questions: list[dict], modes: list[str], limit: int) -> dict:
    """R@1 / R@5 / MRR@10 of the seed projects' FAQ questions in the big collection, judged by page: a copy
    (``copyNNN/page``) counts as its page, so a question is answered when any copy of a gold page ranks."""
    out = {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        for mode in modes:
            ranks = []
            for question in questions:
                body = rq.request_body(question["question"], mode, BIG_COLLECTION, limit)
                if RERANK_EXPLICIT["on"] and not mode.endswith("+rerank"):
                    body["rerank"] = False
                response = client.post("/api/v1/search/semantic", json=body)
                response.raise_for_status()
                payload = response.json()
                pages = []
                for hit in payload["results"]:
                    page = str(hit["source"]).split("/", 1)[1] if str(hit["source"]).startswith("copy") else ""
                    if page not in pages:
                        pages.append(page)
                ranks.append(rq.gold_rank(pages, question["gold"]))
            s = rq.summarize(ranks, [0.0], [0])
            out[mode] = {k: round(s[k], 3) for k in ("recall_at_1", "recall_at_5", "mrr_at_10")}
    return out


# With a reranking model loaded, modes without "+rerank" say "rerank": false (the server's default may be on).
RERANK_EXPLICIT = {"on": False}


def copy_seed_db(source: Path, target: Path, seeds: tuple[str, ...]) -> None:
    """A consistent copy of another data dir's SQLite database (its WAL included), keeping only the ``seeds``
    collections (no other collection's background work during the measurements)."""
    src, dst = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(target)
    try:
        src.backup(dst)
        marks = ", ".join("?" * len(seeds))
        for table in ("chunks", "documents"):
            dst.execute(f"DELETE FROM {table} WHERE collection NOT IN ({marks})", seeds)
        dst.execute(f"DELETE FROM collections WHERE name NOT IN ({marks})", seeds)
        dst.execute("DELETE FROM jobs")
        dst.commit()
    finally:
        src.close()
        dst.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--seed", default="scrapy,celery", help="dev-set projects ingested for real first")
    parser.add_argument("--cache-dir", type=Path, default=rq.DEFAULT_CACHE_DIR)
    parser.add_argument("--noise", type=float, default=0.45, help="noise norm added to a copied vector")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--modes", default="vector,keyword,hybrid")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse (or build once into) this data dir")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--atrium", default=str(rq.REPO_DIR / ".venv" / "bin" / "atrium"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quality", action="store_true",
                        help="also score the seed projects' FAQ questions in the big collection (by page)")
    parser.add_argument("--seed-db", type=Path, default=None,
                        help="instead of ingesting the seed projects: copy this atrium.db (e.g. the dev sets' data "
                             "dir, each project in its own collection) and copy its --seed collections")
    parser.add_argument("--rerank-model", type=Path, default=None,
                        help="a folder with the reranking model (model.onnx, tokenizer.json): linked into the data "
                             "dir so the server loads it; add hybrid+rerank to --modes")
    args = parser.parse_args(argv)
    RERANK_EXPLICIT["on"] = args.rerank_model is not None

    data_dir = args.data_dir.resolve() if args.data_dir else Path(tempfile.mkdtemp(prefix="atrium-p95-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "bench-admin-key"
    if key_file.exists():
        admin_key = key_file.read_text().strip()
    else:
        admin_key = "atr_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
        key_file.write_text(admin_key)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")},
        "ATRIUM_DATA_DIR": str(data_dir),
        "ATRIUM_BOOTSTRAP_ADMIN_KEY": admin_key,
        "ATRIUM_CHAT__PROVIDER": "fake",
        "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
        # One key sends every search: the default 600 requests/minute per key and user would refuse some.
        # The limiter stays on the request path, only higher.
        "ATRIUM_RATE_LIMITS__KEY_REQUESTS_PER_MINUTE": "1000000",
        "ATRIUM_RATE_LIMITS__USER_REQUESTS_PER_MINUTE": "1000000",
        "ATRIUM_RATE_LIMITS__ORG_REQUESTS_PER_MINUTE": "1000000",
        **{k: v for k, v in os.environ.items() if k.startswith("ATRIUM_KNOWLEDGE__")},
    }
    report: dict = {"command": " ".join(["python", *sys.argv]), "build": {}, "runs": []}
    server = None
    try:
        db_path = data_dir / "atrium.db"
        if args.rerank_model is not None:
            link = data_dir / "models" / "all-mpnet-base-v2-int8"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(args.rerank_model.resolve(), target_is_directory=True)
        seeds = tuple(args.seed.split(",")) if args.seed_db is not None else (SEED_COLLECTION,)
        t0 = time.perf_counter()
        if not db_path.exists() and args.seed_db is not None:
            copy_seed_db(args.seed_db, db_path, seeds)
            # The copied database has its own admin: BENCH_API_KEY, a key of it (`atrium keys create`).
            admin_key = os.environ["BENCH_API_KEY"]
            key_file.write_text(admin_key)
            env["ATRIUM_BOOTSTRAP_ADMIN_KEY"] = admin_key
        elif not db_path.exists():
            for name in args.seed.split(","):
                report["build"][f"ingest_{name}"] = rq.run_ingest(
                    args.atrium, args.cache_dir / name / "corpus", SEED_COLLECTION, env)
        t1 = time.perf_counter()
        report["build"]["copy"] = build_big(db_path, args.chunks, args.noise, np.random.default_rng(0), seeds)
        report["build"]["ingest_s"] = round(t1 - t0, 1)
        report["build"]["copy_s"] = round(time.perf_counter() - t1, 1)
        print("build:", report["build"], flush=True)

        port = rq.free_port()
        log_path = data_dir / "serve.log"
        t2 = time.perf_counter()
        server = rq.start_server(args.atrium, port, env, log_path)
        headers = {"Authorization": f"Bearer {admin_key}"}
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            rq.wait_ready(client, server, log_path, 900)
        report["build"]["serve_ready_s"] = round(time.perf_counter() - t2, 1)
        print(f"server ready in {report['build']['serve_ready_s']} s (HNSW index built at start-up)", flush=True)

        seed_questions: list[dict] = []
        for name in args.seed.split(","):
            seed_questions += rq.load_dataset(args.cache_dir / name)[0]
        questions = [q["question"] for q in seed_questions]
        if args.quality:
            report["quality"] = quality_at_scale(base_url, headers, seed_questions, args.modes.split(","), args.limit)
            print("quality at scale (seed questions, by page):", report["quality"], flush=True)
        rng = random.Random(0)
        words = corpus_words(db_path, rng, seeds=seeds)
        lines = ["| mode | concurrency | searches | p50 ms | p95 ms | p99 ms | searches/s | server CPU ms/search |",
                 "|---|---|---|---|---|---|---|---|"]
        for concurrency in args.concurrency:
            for mode in args.modes.split(","):
                queries = [f"{questions[i % len(questions)]} {rng.choice(words)}" for i in range(args.queries)]
                warm = [f"{rng.choice(questions)} {rng.choice(words)}" for _ in range(10)]
                asyncio.run(run_batch(base_url, headers, warm, mode, concurrency, args.limit))
                cpu0 = proc_cpu(server.pid)
                latencies, wall = asyncio.run(run_batch(base_url, headers, queries, mode, concurrency, args.limit))
                cpu = proc_cpu(server.pid) - cpu0
                row = {"mode": mode, "concurrency": concurrency, "searches": len(latencies),
                       "p50_ms": round(statistics.median(latencies), 1), "p95_ms": round(percentile(latencies, 95), 1),
                       "p99_ms": round(percentile(latencies, 99), 1), "per_s": round(len(latencies) / wall, 1),
                       "cpu_ms_per_search": round(cpu * 1000 / len(latencies), 1)}
                report["runs"].append(row)
                line = (f"| {mode} | {concurrency} | {row['searches']} | {row['p50_ms']} | {row['p95_ms']} | "
                        f"{row['p99_ms']} | {row['per_s']} | {row['cpu_ms_per_search']} |")
                lines.append(line)
                print(line, flush=True)
    finally:
        if server is not None:
            rq.stop_server(server)
        if args.keep_data or args.data_dir:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    report["markdown"] = "\n".join(lines)
    print(report["markdown"])
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
