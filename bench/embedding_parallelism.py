"""How to spread ONNX embedding over the cores: intra-op threads in one batch, or batches side by side.

On the same chunk-sized texts (200 words of dev-set documentation, bench/_corpus.py), tokenised and cut into
``OnnxEmbedder``'s length-sorted batches, each variant embeds every text; the variants alternate
``--rounds`` times (the machine is shared: compare within one run). Variants:

* bare onnxruntime, default session options (intra-op threads = every core), batches of 32 in order;
* one session, 1 intra-op thread, batches one after another (one core);
* one session, ``--threads`` intra-op threads, batches one after another;
* one session, 1 intra-op thread, ``--threads`` batches side by side (what ``embedding.parallel`` does);
* ``--threads`` sessions of 1 intra-op thread, batches side by side.

Reported: texts/s (best and median round) and CPU milliseconds per text (this process, all threads).

    python bench/embedding_parallelism.py [--texts 96] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from atrium.knowledge.embedders import OnnxEmbedder
from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import chunk_sized_texts, load_average


def bare(texts: list[str]) -> Callable[[], None]:
    model, tokenizer_file = bundled_model_paths()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    names = {item.name for item in session.get_inputs()}

    def run() -> None:
        for start in range(0, len(texts), 32):
            encodings = tokenizer.encode_batch(texts[start:start + 32])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            session.run(None, {k: v for k, v in feed.items() if k in names})

    return run


def variant(texts: list[str], intra: int, sessions: int, workers: int) -> Callable[[], None]:
    embedders = [OnnxEmbedder(intra_op_num_threads=intra) for _ in range(sessions)]
    first = embedders[0]

    def run() -> None:
        encodings = first._tokenizer.encode_batch(texts)
        batches = first._batches(encodings)
        if workers == 1:
            for rows in batches:
                first._run([encodings[i] for i in rows])
            return
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda item: embedders[item[0] % sessions]._run([encodings[i] for i in item[1]]),
                          enumerate(batches)))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = chunk_sized_texts(args.texts)
    n = args.threads
    variants = {
        "bare onnxruntime, default threads, batches of 32": bare(texts),
        "1 session, 1 intra-op thread, one batch at a time": variant(texts, 1, 1, 1),
        f"1 session, {n} intra-op threads, one batch at a time": variant(texts, n, 1, 1),
        f"1 session, 1 intra-op thread, {n} batches side by side": variant(texts, 1, 1, n),
        f"{n} sessions, 1 intra-op thread, {n} batches side by side": variant(texts, 1, n, n),
    }
    print(f"{len(texts)} texts of 200 words; load average at start: {load_average()}")
    for run in variants.values():
        run()  # warm-up
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, run in variants.items():
            cpu, wall = time.process_time(), time.perf_counter()
            run()
            results[label].append((time.perf_counter() - wall, time.process_time() - cpu))
    print("| variant | texts/s best | texts/s median | CPU ms / text |")
    print("|---|---|---|---|")
    for label, rows in results.items():
        walls = [wall for wall, _ in rows]
        cpu = statistics.mean(cpu for _, cpu in rows)
        print(f"| {label} | {len(texts) / min(walls):.1f} | {len(texts) / statistics.median(walls):.1f} | "
              f"{cpu / len(texts) * 1000:.0f} |")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
