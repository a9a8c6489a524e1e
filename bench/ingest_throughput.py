"""Issue 14, figure (a): ingestion chunks/s through ``atrium ingest`` against a bare onnxruntime run of the
same model on all cores, on the same chunk texts, side by side.

``--files`` files of ``--kb`` KB of documentation text (bench/_corpus.py) are ingested by ``atrium ingest``
into a fresh data dir (embedded default: SQLite, the bundled all-MiniLM-L6-v2 int8 model, the window
chunker), the whole command timed: start-up, parsing, chunking, embedding, the database and the index. The
chunk texts it stored are then embedded by a bare onnxruntime session in another process (default session
options, so every core; the model's tokenizer; batches of 32 in stored order): the ceiling set by the model
alone. Each atrium run (the defaults, and each ``--variant``) is followed by its own bare run, ``--rounds``
times (a fresh data dir each time, so the embedding cache is cold). Both walls are whole processes
(imports, model load, work); the bare run's inference-only time is shown too. Reported per run: chunks/s,
wall and CPU seconds (process and children), the ratio of chunks/s; then the median ratio per variant.

    python bench/ingest_throughput.py [--files 8] [--kb 60] [--rounds 3] [--variant ATRIUM_EMBEDDING__BULK_NICE=0]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import atrium_bin, atrium_env  # noqa: E402
from _corpus import load_average, write_files  # noqa: E402

BARE = r"""
import json, sys, time, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths
texts = json.load(open(sys.argv[1]))
model, tokenizer = bundled_model_paths()
session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(str(tokenizer)); tok.enable_truncation(256); tok.enable_padding()
names = {item.name for item in session.get_inputs()}
started = time.perf_counter()
for start in range(0, len(texts), 32):
    encodings = tok.encode_batch(texts[start:start + 32])
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    session.run(None, {k: v for k, v in feed.items() if k in names})
print(time.perf_counter() - started)
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, stdout) of ``command``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{command[:2]} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--kb", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[],
                        help="atrium settings of one more atrium run per round, NAME=VALUE[,NAME=VALUE]")
    args = parser.parse_args()
    variants = ["", *args.variant]
    print(f"load average at start: {load_average()}")
    print("| round | atrium settings | chunks | atrium ingest chunks/s | wall s | CPU s | bare ORT chunks/s | wall s | "
          "CPU s | ratio | bare ORT inference only, s | atrium start-up s | ratio without start-ups |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {variant: [] for variant in variants}
    steady: dict[str, list[float]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_files(corpus, args.files, args.kb)
        tiny = Path(tmp) / "tiny"
        tiny.mkdir()
        (tiny / "one.txt").write_text("One short file: what a process start costs.\n", encoding="utf-8")
        bare_script = Path(tmp) / "bare.py"
        bare_script.write_text(BARE)
        for number in range(1, args.rounds + 1):
            for variant in variants:
                data = Path(tmp) / f"data-{number}-{len(ratios[variant])}-{variants.index(variant)}"
                env = atrium_env(data, **dict(item.split("=", 1) for item in variant.split(",") if item))
                env.update(ATRIUM_KNOWLEDGE__DEMO_COLLECTION="false", ATRIUM_CHAT__PROVIDER="fake")
                subprocess.run([atrium_bin(), "migrate"], env=env, check=True, capture_output=True)
                # The process's fixed cost (imports, model load, one tiny document), timed on its own.
                startup, _, _ = timed([atrium_bin(), "ingest", str(tiny), "--collection", "warm"], env)
                wall, cpu, _ = timed([atrium_bin(), "ingest", str(corpus), "--collection", "bench"], env)
                with sqlite3.connect(data / "atrium.db") as db:
                    texts = [row[0] for row in db.execute("SELECT text FROM chunks WHERE collection = 'bench' "
                                                          "ORDER BY id")]
                texts_file = Path(tmp) / "texts.json"
                texts_file.write_text(json.dumps(texts))
                bare_wall, bare_cpu, out = timed([sys.executable, str(bare_script), str(texts_file)],
                                                 dict(os.environ))
                ratio = bare_wall / wall
                ratios[variant].append(ratio)
                # Ingestion against inference: each side without its process's start-up.
                steady_ratio = float(out) / max(wall - startup, 1e-3)
                steady[variant].append(steady_ratio)
                print(f"| {number} | {variant or 'defaults'} | {len(texts)} | {len(texts) / wall:.1f} | {wall:.1f} | "
                      f"{cpu:.1f} | {len(texts) / bare_wall:.1f} | {bare_wall:.1f} | {bare_cpu:.1f} | {ratio:.2f} | "
                      f"{float(out):.1f} | {startup:.1f} | {steady_ratio:.2f} |", flush=True)
    for variant, values in ratios.items():
        print(f"median ratio (atrium ingest / bare ORT, chunks/s), {variant or 'defaults'}: "
              f"{statistics.median(values):.2f}; without the start-ups: {statistics.median(steady[variant]):.2f}")
    print(f"load average at end: {load_average()}")

if __name__ == "__main__":
    main()
