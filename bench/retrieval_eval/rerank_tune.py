"""Tune and compare the reranking stage (issue 14) on the FAQ dev sets, offline, with the service's code.

Needs a data dir where each project was ingested into its own collection with the reranking model loaded
(or its vectors made afterwards by ``atrium index rerank-vectors``), so that every chunk has its
all-mpnet-base-v2 vector. Per question it takes the vector (MiniLM) and keyword rankings of a running
``atrium serve`` (``fusion_tune.fetch_rankings``; or ``--rankings`` of an earlier ``fusion_tune``/this
script's ``--out``), fuses them as hybrid does, and then:

- ``hybrid+rerank`` N/w: the first N fused candidates re-ordered by ``EmbeddingReranker.rerank`` (the
  service's code) with the reranker's weight w, for N in ``--depths`` and w on a 0.05 grid; the pair is
  also chosen by leave-one-project-out (tuned on 16 projects, scored on the 17th);
- the quality model as the collection's embedding model instead: ``vector (mpnet)``, exact cosine over
  every chunk of the collection with the stored mpnet vectors (what an index of that model returns, without
  HNSW's approximation), and ``hybrid (mpnet)``, that ranking fused with the keyword one as hybrid fuses.

The questions are embedded with the exported model (``--model-dir``). Judged by page as
bench/retrieval_quality.py (R@1, R@5, MRR@10), pooled and per project.

Usage::

    python bench/retrieval_eval/rerank_tune.py --data-dir /tmp/q --model-dir /tmp/q/models/all-mpnet-base-v2-int8 \\
        --out rerank.json
    python bench/retrieval_eval/rerank_tune.py --data-dir /tmp/q --model-dir ... --rankings rerank.json  # offline
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import string
import sys
from pathlib import Path

import httpx
import numpy as np

BENCH_DIR = Path(__file__).resolve().parents[1]
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import retrieval_quality as rq  # noqa: E402
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder  # noqa: E402
from atrium.knowledge.fusion import fuse  # noqa: E402
from atrium.knowledge.rerank import EmbeddingReranker  # noqa: E402
from atrium.knowledge.settings import KnowledgeSettings, RerankSettings  # noqa: E402
from retrieval_eval import fusion_tune as ft  # noqa: E402

WEIGHTS = [round(0.05 * i, 2) for i in range(0, 21)]
DEFAULTS = KnowledgeSettings()


def load_store(data_dir: Path) -> tuple[dict[int, str], dict[str, tuple[list[int], np.ndarray]]]:
    """Every chunk's page, and per collection its chunk ids with their stored mpnet vectors."""
    db = sqlite3.connect(f"file:{data_dir / 'atrium.db'}?mode=ro", uri=True)
    sources: dict[int, str] = {}
    by_collection: dict[str, tuple[list[int], list[bytes]]] = {}
    missing = 0
    for chunk_id, collection, source, blob in db.execute(
            "SELECT c.id, c.collection, d.source, c.rerank_embedding FROM chunks c JOIN documents d "
            "ON d.id = c.document_id ORDER BY c.id"):
        sources[chunk_id] = str(source).replace("\\", "/").removeprefix("./")
        if blob is None:
            missing += 1
            continue
        ids, blobs = by_collection.setdefault(collection, ([], []))
        ids.append(chunk_id)
        blobs.append(blob)
    if missing:
        raise SystemExit(f"{missing} chunks lack a reranking vector: run `atrium index rerank-vectors` first")
    stacked = {name: (ids, np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1))
               for name, (ids, blobs) in by_collection.items()}
    return sources, stacked


def rank_lists(rows: list[dict], queries: np.ndarray, store: dict[str, tuple[list[int], np.ndarray]],
               depth: int) -> None:
    """Adds to each row its exact mpnet ranking (``mpnet``) and its query's mpnet vector (``q``)."""
    for row, query in zip(rows, queries, strict=True):
        ids, vectors = store[row["project"]]
        scores = vectors @ query
        top = np.argsort(-scores)[:depth]
        row["mpnet"] = [(ids[i], float(scores[i])) for i in top]
        row["q"] = query


def ranked_for(row: dict, method: str, limit: int, *, reranker: EmbeddingReranker | None = None,
               vectors: dict[int, np.ndarray] | None = None) -> list[tuple[int, float]]:
    k = DEFAULTS.rrf_k
    if method in ("keyword", "vector", "mpnet"):
        return row[method][:limit]
    if method == "hybrid":
        return fuse(row["vector"], row["keyword"], method=DEFAULTS.fusion, vector_weight=DEFAULTS.vector_weight,
                    k=k, limit=limit)
    if method == "hybrid_mpnet":
        return fuse(row["mpnet"], row["keyword"], method=DEFAULTS.fusion, vector_weight=DEFAULTS.vector_weight,
                    k=k, limit=limit)
    assert method == "rerank" and reranker is not None and vectors is not None
    fused = fuse(row["vector"], row["keyword"], method=DEFAULTS.fusion, vector_weight=DEFAULTS.vector_weight,
                 k=k, limit=reranker.settings.candidates)
    return reranker.rerank(fused, row["q"], vectors, k=k, limit=limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="model.onnx + tokenizer.json (mpnet)")
    parser.add_argument("--cache-dir", type=Path, default=rq.DEFAULT_CACHE_DIR)
    parser.add_argument("--sources", default="all")
    parser.add_argument("--candidates", type=int, default=30, help="knowledge.candidates of the server")
    parser.add_argument("--depths", default="10,20,30", help="rerank.candidates values tried")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--atrium", default=str(rq.REPO_DIR / ".venv" / "bin" / "atrium"))
    parser.add_argument("--rankings", type=Path, default=None, help="reuse the rankings of an earlier --out")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    sources = rq.build_dataset_module().parse_sources(args.sources)
    questions: list[dict] = []
    for source in sources:
        questions.extend(rq.load_dataset(args.cache_dir / source.name)[0])
    if args.rankings is not None:
        rows = json.loads(args.rankings.read_text(encoding="utf-8"))["rankings"]
        for row in rows:
            row["vector"] = [tuple(pair) for pair in row["vector"]]
            row["keyword"] = [tuple(pair) for pair in row["keyword"]]
        wanted = {q["id"] for q in questions}
        rows = [row for row in rows if row["id"] in wanted]
    else:
        rows = fetch(args, questions)
    text_of = {q["id"]: q["question"] for q in questions}
    chunk_sources, store = load_store(args.data_dir)
    embedder = OnnxEmbedder(model_path=args.model_dir / "model.onnx",
                            tokenizer_path=args.model_dir / "tokenizer.json", name="all-mpnet-base-v2-int8")
    queries = embedder.embed_sync([text_of[row["id"]] for row in rows])
    rank_lists(rows, queries, store, args.candidates)
    vectors = {chunk_id: vecs[i] for ids, vecs in store.values() for i, chunk_id in enumerate(ids)}
    for row in rows:
        row["source"] = chunk_sources

    def ranks(subset: list[dict], method: str, depth: int = 0, weight: float = 0.0) -> list[int | None]:
        reranker = EmbeddingReranker(embedder, RerankSettings(candidates=depth or 1, weight=weight)) \
            if method == "rerank" else None
        return [ft.rank_of(row, ranked_for(row, method, args.limit, reranker=reranker, vectors=vectors))
                for row in subset]

    depths = [int(d) for d in args.depths.split(",")]
    grid = {(d, w): ft.metrics(ranks(rows, "rerank", d, w)) for d in depths for w in WEIGHTS}

    def best(subset: list[dict]) -> tuple[int, float]:
        scored = [(ft.objective(ft.metrics(ranks(subset, "rerank", d, w))), -d, w, d) for d in depths
                  for w in WEIGHTS]
        top = max(scored)
        return top[3], top[2]

    projects = sorted({row["project"] for row in rows})
    held_ranks: list[int | None] = []
    folds = {}
    for held in projects if len(projects) > 1 else []:
        d, w = best([r for r in rows if r["project"] != held])
        folds[held] = [d, w]
        held_ranks.extend(ranks([r for r in rows if r["project"] == held], "rerank", d, w))
    chosen_depth, chosen_weight = best(rows)
    settings = RerankSettings()
    singles = {"keyword": ("keyword",), "vector (MiniLM)": ("vector",), "hybrid (default fusion)": ("hybrid",),
               f"hybrid + rerank (defaults: N={settings.candidates}, w={settings.weight})":
                   ("rerank", settings.candidates, settings.weight),
               f"hybrid + rerank (best on all: N={chosen_depth}, w={chosen_weight})":
                   ("rerank", chosen_depth, chosen_weight),
               "vector (mpnet as the collection's model)": ("mpnet",),
               "hybrid (mpnet as the collection's model)": ("hybrid_mpnet",)}
    lines = ["| mode (pooled) | R@1 | R@5 | MRR@10 |", "|---|---|---|---|"]
    pooled = {}
    for name, spec in singles.items():
        m = ft.metrics(ranks(rows, *spec))  # type: ignore[arg-type]
        pooled[name] = m
        lines.append(f"| {name} | {m['r1']:.3f} | {m['r5']:.3f} | {m['mrr10']:.3f} |")
    h = ft.metrics(held_ranks) if held_ranks else {"r1": float("nan"), "r5": float("nan"), "mrr10": float("nan")}
    lines.append(f"| hybrid + rerank, N and w by leave-one-project-out | {h['r1']:.3f} | {h['r5']:.3f} | "
                 f"{h['mrr10']:.3f} |")
    lines += ["", "| rerank weight | " + " | ".join(f"N={d} R@1 / R@5 / MRR@10" for d in depths) + " |",
              "|---|" + "---|" * len(depths)]
    for w in WEIGHTS:
        lines.append(f"| {w} | " + " | ".join(
            f"{grid[(d, w)]['r1']:.3f} / {grid[(d, w)]['r5']:.3f} / {grid[(d, w)]['mrr10']:.3f}" for d in depths)
            + " |")
    per_project = {}
    lines += ["", "| project (questions) | " + " | ".join(singles) + " |", "|---|" + "---|" * len(singles)]
    for project in projects:
        subset = [r for r in rows if r["project"] == project]
        per_project[project] = {name: ft.metrics(ranks(subset, *spec)) for name, spec in singles.items()}  # type: ignore[arg-type]
        lines.append(f"| {project} ({len(subset)}) | " + " | ".join(
            f"{m['r1']:.3f} / {m['r5']:.3f} / {m['mrr10']:.3f}" for m in per_project[project].values()) + " |")
    default_name = next(name for name in singles if name.startswith("hybrid + rerank (defaults"))
    wins = sum(per_project[p][default_name]["mrr10"] >= max(per_project[p]["keyword"]["mrr10"],
                                                             per_project[p]["vector (MiniLM)"]["mrr10"])
               for p in projects)
    lines.append(f"\n{default_name}: MRR@10 at least the better single mode's on {wins} of {len(projects)} "
                 f"projects; leave-one-project-out folds (N, w): {folds}")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        for row in rows:
            row.pop("q", None)
            row.pop("source", None)
            row.pop("mpnet", None)
        args.out.write_text(json.dumps({"pooled": pooled, "held_out": h, "folds": folds,
                                        "chosen": [chosen_depth, chosen_weight], "by_project": per_project,
                                        "markdown": table, "rankings": rows}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def fetch(args: argparse.Namespace, questions: list[dict]) -> list[dict]:
    """The vector and keyword rankings from a server over the data dir, the reranker off."""
    admin_key = os.environ.get("BENCH_API_KEY") or "atr_" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")},
        "ATRIUM_DATA_DIR": str(args.data_dir),
        "ATRIUM_BOOTSTRAP_ADMIN_KEY": admin_key,
        "ATRIUM_CHAT__PROVIDER": "fake",
        "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
        "ATRIUM_KNOWLEDGE__CANDIDATES": str(args.candidates),
        "ATRIUM_KNOWLEDGE__RERANK__ENABLED": "off",
    }
    port = rq.free_port()
    log_path = args.data_dir / "rerank-tune-serve.log"
    server = rq.start_server(args.atrium, port, env, log_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {admin_key}"},
                          timeout=120) as client:
            rq.wait_ready(client, server, log_path, 600)
            rows = ft.fetch_rankings(client, questions, args.candidates)
    finally:
        rq.stop_server(server)
    for row in rows:
        row.pop("source", None)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
