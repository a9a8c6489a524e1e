"""Vector search latency and recall: ``HnswVectorIndex`` against exact numpy search, side by side.

Data (embedding-like, 384-d, normalised): cluster centres are real all-MiniLM-L6-v2 embeddings of docstring
sentences from installed packages (``--centres minilm``, default; ``synthetic`` draws random centres), and
each data point is a centre plus isotropic Gaussian noise of a per-point scale in ``[--noise-min,
--noise-max]`` (cosine to its centre about 0.75 to 0.93). Isotropic noise in 384-d is harder for HNSW than
real text embeddings (which lie on a lower-dimensional surface), so recall here is a pessimistic estimate.
Queries are data points perturbed with more noise (``--query-noise``; cosine about 0.96 to the point).

For each size the script builds one HNSW index through the real port (``await index.add`` in batches,
``num_threads`` for hnswlib's ``add_items``), saves it to a temporary folder, and one ``ExactVectorIndex`` (the
tests' numpy reference), then for each ``--ef-search`` value opens the saved index with that search breadth
and times ``--queries`` sequential ``await index.search(tenant, None, query, 10)`` calls (the async port,
worker-thread hop included) after a warm-up, and as many exact searches (``--exact-queries``, fewer at large
sizes). Ground truth is exact top-10 by batched matrix product. Reported: p50/p95/p99 latency, CPU ms per
query, recall@10 of HNSW against exact, build wall and CPU time, peak RSS. Prints one markdown table row per
(size, ef_search); ``--out`` appends the rows to a JSON list.

``--real N`` adds a run on N real MiniLM embeddings of docstring sentences, with held-out sentences as the
queries (a small but realistic recall check). ``--sizes`` may be empty to run only that.

Targets: p95 <= 10 ms at 100k and <= 20 ms at 1M with recall@10 >= 0.95 (2 CPU cores).

Usage::

    python bench/search_latency.py --sizes 100000
    python bench/search_latency.py --sizes 100000 1000000 --ef-search 32 64 128 --out bench-results.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt

from atrium.knowledge.vector import HnswVectorIndex

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.exact_vector_index import ExactVectorIndex

Matrix = npt.NDArray[np.float32]
TENANT, COLLECTION, K = "bench", "docs", 10


@dataclass
class Row:
    vectors: int
    dim: int
    centres: str
    M: int
    ef_construction: int
    ef_search: int
    build_wall_s: float
    build_cpu_s: float
    hnsw_p50_ms: float
    hnsw_p95_ms: float
    hnsw_p99_ms: float
    hnsw_cpu_ms_per_query: float
    exact_p50_ms: float
    exact_p95_ms: float
    exact_queries: int
    recall_at_10: float
    peak_rss_gb: float


def normalise(rows: Matrix) -> Matrix:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def minilm_embeddings(count: int, seed: int) -> Matrix:
    """Real MiniLM embeddings of docstring sentences (see bench/embedding_throughput.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from atrium.knowledge.embedders import OnnxEmbedder
    from embedding_throughput import sample_sentences

    sentences = sample_sentences(count, seed=seed)
    return OnnxEmbedder(batch_size=64, intra_op_num_threads=2).embed_sync(sentences)


def make_data(n: int, centres: Matrix, args: argparse.Namespace, rng: np.random.Generator) -> Matrix:
    dim = centres.shape[1]
    data = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, to keep the temporaries small
        size = min(100_000, n - start)
        scale = rng.uniform(args.noise_min, args.noise_max, size=(size, 1)) / np.sqrt(dim)
        noise = rng.standard_normal((size, dim), dtype=np.float32) * scale.astype(np.float32)
        data[start:start + size] = normalise(centres[rng.integers(0, len(centres), size)] + noise)
    return data


def exact_top_k(data: Matrix, queries: Matrix, k: int) -> npt.NDArray[np.int64]:
    truth = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ data.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        truth[start:start + 64] = top
    return truth


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


async def time_searches(index: HnswVectorIndex | ExactVectorIndex, queries: Matrix
                        ) -> tuple[list[float], float, list[list[int]]]:
    """Per-query wall seconds, CPU seconds per query, and the hit ids."""
    for query in queries[:20]:  # warm-up
        await index.search(TENANT, None, query, K)
    latencies: list[float] = []
    found: list[list[int]] = []
    cpu = time.process_time()
    for query in queries:
        start = time.perf_counter()
        hits = await index.search(TENANT, None, query, K)
        latencies.append(time.perf_counter() - start)
        found.append([hit.id for hit in hits])
    return latencies, (time.process_time() - cpu) / len(queries), found


async def bench_size(n: int, centres: Matrix, args: argparse.Namespace) -> list[Row]:
    rng = np.random.default_rng(args.seed + n)
    dim = centres.shape[1]
    data = make_data(n, centres, args, rng)
    picks = rng.choice(n, size=args.queries, replace=False)
    noise = rng.standard_normal((args.queries, dim), dtype=np.float32) * np.float32(args.query_noise / np.sqrt(dim))
    queries = normalise(data[picks] + noise)
    return await bench_data(data, queries, args.centres, args)


async def bench_real(count: int, args: argparse.Namespace) -> list[Row]:
    """Real embeddings only: ``count`` docstring sentences, the last ``--queries`` of them held out as queries."""
    embeddings = minilm_embeddings(count, args.seed + 1)
    split = len(embeddings) - min(args.queries, len(embeddings) // 5)
    return await bench_data(embeddings[:split], embeddings[split:], "real", args)


async def bench_data(data: Matrix, queries: Matrix, label: str, args: argparse.Namespace) -> list[Row]:
    truth = exact_top_k(data, queries, K)
    with tempfile.TemporaryDirectory(prefix="atrium-bench-hnsw-") as folder:
        return await bench_hnsw(Path(folder), data, queries, truth, label, args)


async def bench_hnsw(folder: Path, data: Matrix, queries: Matrix, truth: npt.NDArray[np.int64], label: str,
                     args: argparse.Namespace) -> list[Row]:
    n, dim = data.shape
    built = HnswVectorIndex(folder, dim, M=args.M, ef_construction=args.ef_construction,
                            ef_search=args.ef_search[0], num_threads=args.threads, initial_capacity=n)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        await built.add(TENANT, COLLECTION, range(start, stop), data[start:stop])
    build_wall, build_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"# built {n:,} x {dim} in {build_wall:.1f} s wall, {build_cpu:.1f} s CPU", file=sys.stderr)
    await built.save()
    del built

    exact = ExactVectorIndex(dim)
    await exact.add(TENANT, COLLECTION, range(n), data)
    exact_queries = queries[:args.exact_queries or (args.queries if n <= 200_000 else 200)]
    exact_latencies, _, exact_found = await time_searches(exact, exact_queries)
    exact_recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(exact_found, truth, strict=False)])
    assert exact_recall > 0.999, f"exact search disagrees with the ground truth ({exact_recall})"

    rows = []
    for ef in args.ef_search:
        hnsw = HnswVectorIndex(folder, dim, M=args.M, ef_construction=args.ef_construction, ef_search=ef)
        latencies, cpu_per_query, found = await time_searches(hnsw, queries)
        recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))
        rows.append(Row(
            vectors=n, dim=dim, centres=label, M=args.M, ef_construction=args.ef_construction,
            ef_search=ef, build_wall_s=round(build_wall, 1), build_cpu_s=round(build_cpu, 1),
            hnsw_p50_ms=percentile_ms(latencies, 50), hnsw_p95_ms=percentile_ms(latencies, 95),
            hnsw_p99_ms=percentile_ms(latencies, 99), hnsw_cpu_ms_per_query=round(cpu_per_query * 1000, 3),
            exact_p50_ms=percentile_ms(exact_latencies, 50), exact_p95_ms=percentile_ms(exact_latencies, 95),
            exact_queries=len(exact_queries), recall_at_10=round(recall, 4),
            peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
        ))
        row = rows[-1]
        print(f"| {row.vectors:,} | {row.M} | {row.ef_construction} | {row.ef_search} | {row.build_wall_s} | "
              f"{row.build_cpu_s} | {row.hnsw_p50_ms} | {row.hnsw_p95_ms} | {row.hnsw_p99_ms} | "
              f"{row.hnsw_cpu_ms_per_query} | {row.exact_p50_ms} | {row.exact_p95_ms} | {row.recall_at_10} | "
              f"{row.peak_rss_gb} |", flush=True)
    return rows


async def run(args: argparse.Namespace) -> list[Row]:
    rng = np.random.default_rng(args.seed)
    if args.centres == "minilm":
        centres = minilm_embeddings(args.num_centres, args.seed)
    else:
        centres = normalise(rng.standard_normal((args.num_centres, args.dim), dtype=np.float32))
    print(f"# {len(centres)} {args.centres} centres, {args.queries} queries, {args.threads} build threads",
          file=sys.stderr)
    print("| vectors | M | ef_c | ef_s | build s | build CPU s | HNSW p50 ms | p95 ms | p99 ms | CPU ms/q | "
          "exact p50 ms | exact p95 ms | recall@10 | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[Row] = []
    if args.real:
        rows.extend(await bench_real(args.real, args))
        if args.out:
            append_json(args.out, rows[-len(args.ef_search):])
    for n in args.sizes:
        rows.extend(await bench_size(n, centres, args))
        if args.out:
            append_json(args.out, rows[-len(args.ef_search):])
    return rows


def append_json(path: Path, rows: list[Row]) -> None:
    existing = json.loads(path.read_text()) if path.exists() else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    existing.extend({"bench": "search_latency", "at": stamp, **asdict(row)} for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--real", type=int, default=0,
                        help="also run on this many real MiniLM sentence embeddings (held-out queries)")
    parser.add_argument("--exact-queries", type=int, default=0,
                        help="exact searches to time (default: all up to 200k vectors, else 200)")
    parser.add_argument("--centres", choices=["minilm", "synthetic"], default="minilm")
    parser.add_argument("--num-centres", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384, help="dimensions of synthetic centres")
    parser.add_argument("--noise-min", type=float, default=0.4)
    parser.add_argument("--noise-max", type=float, default=0.9)
    parser.add_argument("--query-noise", type=float, default=0.3)
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64])
    parser.add_argument("--threads", type=int, default=2, help="hnswlib build threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append the rows to this JSON file (a list)")
    args = parser.parse_args()
    anyio.run(run, args)


if __name__ == "__main__":
    main()
