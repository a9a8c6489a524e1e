"""What reranking adds to one search: the reranking model's question embedding, against the bundled MiniLM's.

Embeds the dev sets' FAQ questions one at a time (as a search does) with the bundled MiniLM int8 and with the
exported all-mpnet-base-v2 int8 (``--model-dir``), alternating models, one ONNX thread each, and reports CPU
ms (``time.thread_time``, robust to a loaded machine) and wall ms per question, median and p95. Also the
cosine re-scoring of ``--candidates`` stored vectors (numpy), the rest of the stage's own work.

Usage::

    python bench/rerank_query_cost.py --model-dir DATA_DIR/models/all-mpnet-base-v2-int8 --out cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import retrieval_quality as rq  # noqa: E402
from atrium.knowledge.embedders.fake import HashEmbedder  # noqa: E402
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder  # noqa: E402
from atrium.knowledge.rerank import EmbeddingReranker  # noqa: E402
from atrium.knowledge.settings import RerankSettings  # noqa: E402


def p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=rq.DEFAULT_CACHE_DIR)
    parser.add_argument("--sources", default="all")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    questions: list[str] = []
    for source in rq.build_dataset_module().parse_sources(args.sources):
        questions += [q["question"] for q in rq.load_dataset(args.cache_dir / source.name)[0]]
    models = {"MiniLM-L6 int8 (bundled)": OnnxEmbedder(),
              "all-mpnet-base-v2 int8": OnnxEmbedder(model_path=args.model_dir / "model.onnx",
                                                     tokenizer_path=args.model_dir / "tokenizer.json")}
    for embedder in models.values():  # warm-up
        embedder.embed_sync(questions[:5])
    cpu: dict[str, list[float]] = {name: [] for name in models}
    wall: dict[str, list[float]] = {name: [] for name in models}
    for question in questions:
        for name, embedder in models.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            embedder.embed_sync([question])
            cpu[name].append((time.thread_time() - c0) * 1000)
            wall[name].append((time.perf_counter() - w0) * 1000)
    reranker = EmbeddingReranker(HashEmbedder(dimensions=768), RerankSettings(candidates=args.candidates))
    rng = np.random.default_rng(0)
    vectors = {i: v / np.linalg.norm(v) for i, v in enumerate(rng.standard_normal((args.candidates, 768))
                                                               .astype(np.float32))}
    ranked = [(i, 1.0 / (i + 1)) for i in range(args.candidates)]
    c0 = time.thread_time()
    for _ in range(200):
        reranker.rerank(ranked, vectors[0], vectors, k=60, limit=10)
    rescoring = (time.thread_time() - c0) * 1000 / 200
    lines = [f"{len(questions)} questions, one at a time, 1 ONNX thread", "",
             "| question embedding | CPU ms median | CPU ms p95 | wall ms median | wall ms p95 |",
             "|---|---|---|---|---|"]
    report: dict = {"questions": len(questions), "models": {}, "rescoring_ms": round(rescoring, 3)}
    for name in models:
        row = {"cpu_median": statistics.median(cpu[name]), "cpu_p95": p95(cpu[name]),
               "wall_median": statistics.median(wall[name]), "wall_p95": p95(wall[name])}
        report["models"][name] = {k: round(v, 2) for k, v in row.items()}
        lines.append(f"| {name} | {row['cpu_median']:.1f} | {row['cpu_p95']:.1f} | {row['wall_median']:.1f} | "
                     f"{row['wall_p95']:.1f} |")
    lines.append(f"\nRe-scoring {args.candidates} candidates (cosine + weighted RRF): {rescoring:.3f} ms CPU")
    report["markdown"] = "\n".join(lines)
    print(report["markdown"])
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
