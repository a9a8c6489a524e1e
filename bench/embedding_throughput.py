"""Embedding throughput of ``OnnxEmbedder`` (bundled all-MiniLM-L6-v2 int8) on the CPU.

Two text shapes: short (about 12 words, a search query or a title) and chunk-sized (about 200 tokens, what
ingestion embeds). Texts are real English sentences taken from the docstrings of installed, version-pinned
packages, so the tokenizer sees ordinary prose and code words, and runs are reproducible.

For each shape and each batch size (1, 16, 32, 64 by default) the script embeds the same texts through the
real async port (``await embedder.embed(texts)``: tokenisation, length sorting, batching, the worker
thread), after one warm-up call, and reports texts/s (wall) and CPU seconds per 1,000 texts
(``time.process_time``, all threads of this process). Several repetitions; the best wall time is kept (the
machine is shared and noisy), CPU is the mean. ``--max-batch-tokens`` sets the adapter's cap on padded
tokens per batch (default 512, the adapter's default; a huge value shows the effect of batch_size alone).

Usage::

    python bench/embedding_throughput.py
    python bench/embedding_throughput.py --batch-sizes 1 32 --threads 2 --out docs/bench/embedding.json
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from atrium.knowledge.embedders import OnnxEmbedder

# Well-documented packages pinned by uv.lock: the sample is the same on every machine with this lock.
SOURCE_PACKAGES = ("sqlalchemy", "pydantic", "anyio", "httpx", "alembic", "click", "numpy", "fastapi")


@dataclass
class Row:
    shape: str
    texts: int
    mean_tokens: float
    batch_size: int
    max_batch_tokens: int
    threads: int
    texts_per_s: float
    cpu_s_per_1k: float
    wall_s: float


def sample_sentences(limit: int, *, min_words: int = 6, max_words: int = 40, seed: int = 0) -> list[str]:
    """Up to ``limit`` distinct docstring sentences from the source packages, shuffled with ``seed``."""
    found: dict[str, None] = {}
    per_package = limit * 2 // len(SOURCE_PACKAGES) + 1  # a mix of packages, twice what is needed
    for package in SOURCE_PACKAGES:
        quota = len(found) + per_package
        try:
            module = __import__(package)
        except ImportError:
            continue
        root = Path(module.__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef | ast.Module):
                    continue
                doc = ast.get_docstring(node) or ""
                for paragraph in doc.split("\n\n"):
                    line = " ".join(paragraph.split())
                    for sentence in line.split(". "):
                        words = sentence.split()
                        if min_words <= len(words) <= max_words and sentence[:1].isupper() \
                                and not any(mark in sentence for mark in (">>>", "::", "..", "|", "==")):
                            found[sentence.rstrip(".") + "."] = None
            if len(found) >= quota:
                break
    sentences = list(found)
    random.Random(seed).shuffle(sentences)
    return sentences[:limit]


def short_texts(count: int, seed: int) -> list[str]:
    """Texts of about 12 words (10 to 14)."""
    return sample_sentences(count, min_words=10, max_words=14, seed=seed)


def chunk_texts(count: int, embedder: OnnxEmbedder, seed: int, tokens: int = 200) -> list[str]:
    """Texts of about ``tokens`` tokens, each made of consecutive sentences."""
    sentences = sample_sentences(count * 20, seed=seed)
    texts: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in sentences:
        current.append(sentence)
        size += embedder.count_tokens(sentence)
        if size >= tokens:
            texts.append(" ".join(current))
            current, size = [], 0
            if len(texts) == count:
                break
    return texts


async def measure(embedder: OnnxEmbedder, texts: list[str], repeats: int) -> tuple[float, float]:
    """(best wall seconds, mean CPU seconds) to embed ``texts`` through the async port."""
    await embedder.embed(texts[: max(embedder.batch_size, 4)])  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        vectors = await embedder.embed(texts)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert vectors.shape == (len(texts), embedder.dimensions)
    return min(walls), statistics.mean(cpus)


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    probe = OnnxEmbedder(intra_op_num_threads=args.threads)
    shapes = {
        "short (~12 words)": short_texts(args.short, args.seed),
        "chunk (~200 tokens)": chunk_texts(args.chunks, probe, args.seed),
    }
    for shape, texts in shapes.items():
        mean_tokens = statistics.mean(probe.count_tokens(text) for text in texts)
        for batch_size in args.batch_sizes:
            embedder = OnnxEmbedder(batch_size=batch_size, intra_op_num_threads=args.threads,
                                    max_batch_tokens=args.max_batch_tokens)
            wall, cpu = await measure(embedder, texts, args.repeats)
            row = Row(shape, len(texts), round(mean_tokens, 1), batch_size, args.max_batch_tokens, args.threads,
                      round(len(texts) / wall, 1), round(cpu / len(texts) * 1000, 2), round(wall, 3))
            rows.append(row)
            print(f"| {row.shape} | {row.texts} | {row.mean_tokens} | {row.batch_size} | {row.max_batch_tokens} | "
                  f"{row.threads} | "
                  f"{row.texts_per_s} | {row.cpu_s_per_1k} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 32, 64])
    parser.add_argument("--short", type=int, default=1024, help="number of short texts")
    parser.add_argument("--chunks", type=int, default=256, help="number of chunk-sized texts")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads")
    parser.add_argument("--max-batch-tokens", type=int, default=512,
                        help="OnnxEmbedder's padded-token cap per batch (a large value: batch_size alone)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append the rows to this JSON file (a list)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, OnnxEmbedder (all-MiniLM-L6-v2 int8), "
          f"intra_op_num_threads={args.threads}")
    print("| texts | n | mean tokens | batch | max batch tokens | threads | texts/s | CPU s / 1k texts |")
    print("|---|---|---|---|---|---|---|---|")
    rows = anyio.run(run, args)
    if args.out:
        existing = json.loads(args.out.read_text()) if args.out.exists() else []
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        existing.extend({"bench": "embedding_throughput", "at": stamp, **asdict(row)} for row in rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(existing, indent=2))


if __name__ == "__main__":
    main()
