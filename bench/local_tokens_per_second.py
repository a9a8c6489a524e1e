"""Decode speed of the bundled local model: llama.cpp alone vs. through Atrium's LocalChatModel.

(a) ``llama_cpp.Llama`` in this process, ``create_chat_completion(stream=True)``;
(b) Atrium's ``LocalChatModel``: the managed ``llama_cpp.server`` child process, OpenAI-format SSE over
    loopback HTTP, parsed by ``OpenAIChatModel`` into ``Token`` events.

Same GGUF, same prompt, same settings (n_ctx, n_threads=1, n_threads_batch=2, n_batch/n_ubatch 512,
``OMP_WAIT_POLICY=PASSIVE``, greedy sampling with llama.cpp server's default penalties), runs alternating
a/b then b/a, after one discarded warm-up each. Decode tokens/s of a run = (tokens - 1) / (time of the last
token - time of the first token): prompt processing and the first token are excluded (both sides reuse the
KV cache of the identical prompt after the warm-up anyway). Reported: medians per side, their ratio, the
median ratio of back-to-back pairs (robust to a shared machine's drifting load), time to first token, and
CPU seconds per run (this process for (a); this process + the server process for (b), from /proc).
Target: Atrium >= 0.97x of llama.cpp alone.

Usage::

    python bench/local_tokens_per_second.py --model qwen2.5-coder-0.5b --runs 7
    python bench/local_tokens_per_second.py --model qwen2.5-coder-1.5b --runs 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atrium.gateway.local_models import LOCAL_MODELS, assemble_model
from atrium.gateway.ports import ChatMessage, ChatRequest, Token
from atrium.gateway.providers.llama_server import LlamaServerConfig, ManagedLlamaServer
from atrium.gateway.providers.local_llama import LocalChatModel

PROMPT = (
    "Explain step by step how a hash map works internally, covering hashing, buckets, collisions, "
    "resizing and complexity, then write a small Python implementation with comments."
)
SYSTEM = "You are a helpful programming assistant."
# llama.cpp server's defaults for these (repeat_penalty differs from Llama.create_chat_completion's 1.0);
# passed explicitly to both sides so that both decode the very same tokens.
SAMPLING: dict[str, Any] = {"top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}


@dataclass
class Run:
    side: str
    tokens: int
    decode_tps: float
    ttft_s: float
    cpu_s: float
    text: str


def decode_rate(stamps: list[float]) -> float:
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return float("nan")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (0.0 where there is no procfs)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_direct(llama: Any, max_tokens: int) -> Run:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    cpu0, start = time.process_time(), time.perf_counter()
    stamps: list[float] = []
    parts: list[str] = []
    for chunk in llama.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                              stream=True, **SAMPLING):
        content = chunk["choices"][0]["delta"].get("content")
        if content:
            stamps.append(time.perf_counter())
            parts.append(content)
    return Run("llama.cpp", len(stamps), decode_rate(stamps), stamps[0] - start if stamps else float("nan"),
               time.process_time() - cpu0, "".join(parts))


async def run_atrium(model: LocalChatModel, server_pid: int, max_tokens: int) -> Run:
    request = ChatRequest(messages=(ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)),
                          max_tokens=max_tokens, temperature=0.0, extra=dict(SAMPLING))
    cpu0, server_cpu0, start = time.process_time(), proc_cpu_seconds(server_pid), time.perf_counter()
    stamps: list[float] = []
    parts: list[str] = []
    async for event in model.stream(request):
        if isinstance(event, Token):
            stamps.append(time.perf_counter())
            parts.append(event.text)
        elif event.type == "error":
            raise RuntimeError(f"Atrium stream failed: {event}")
    cpu = time.process_time() - cpu0 + proc_cpu_seconds(server_pid) - server_cpu0
    return Run("atrium", len(stamps), decode_rate(stamps), stamps[0] - start if stamps else float("nan"), cpu,
               "".join(parts))


def alternating(runs: int) -> Iterator[str]:
    for index in range(runs):
        yield from (("a", "b") if index % 2 == 0 else ("b", "a"))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(LOCAL_MODELS), default="qwen2.5-coder-0.5b")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per side (after one warm-up)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=1)
    parser.add_argument("--n-threads-batch", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("ATRIUM_DATA_DIR", "data")) / "models")
    parser.add_argument("--json", type=Path, help="also write the raw runs and the summary here")
    args = parser.parse_args()

    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before llama.cpp loads, as the managed server gets it
    from llama_cpp import Llama  # imported only after the environment is set

    path = await asyncio.to_thread(assemble_model, args.model, args.cache_dir)
    print(f"model {args.model}: {path}", file=sys.stderr)
    llama = Llama(model_path=str(path), n_ctx=args.n_ctx, n_threads=args.n_threads,
                  n_threads_batch=args.n_threads_batch, n_batch=512, n_ubatch=512, logits_all=False,
                  use_mlock=False, verbose=False)
    with tempfile.TemporaryDirectory() as logs:
        config = LlamaServerConfig(model=args.model, cache_dir=args.cache_dir, log_dir=Path(logs), model_path=path,
                                   n_ctx=args.n_ctx, n_threads=args.n_threads, n_threads_batch=args.n_threads_batch)
        model = LocalChatModel(ManagedLlamaServer(config), request_timeout_s=600.0)
        await model.start()
        server_pid = model._server.pid
        assert server_pid is not None
        try:
            run_direct(llama, args.max_tokens)  # warm-ups: page cache, KV prefix, allocator
            await run_atrium(model, server_pid, args.max_tokens)
            results: list[Run] = []
            for side in alternating(args.runs):
                run = run_direct(llama, args.max_tokens) if side == "a" else await run_atrium(
                    model, server_pid, args.max_tokens)
                results.append(run)
                print(f"  {run.side:9s} {run.tokens:4d} tok  {run.decode_tps:6.2f} tok/s  "
                      f"ttft {run.ttft_s * 1000:6.1f} ms  cpu {run.cpu_s:5.2f} s", file=sys.stderr)
        finally:
            await model.aclose()

    summary: dict[str, Any] = {"model": args.model, "runs": args.runs, "max_tokens": args.max_tokens,
                               "n_ctx": args.n_ctx, "n_threads": args.n_threads,
                               "n_threads_batch": args.n_threads_batch, "loadavg_1m_at_end": os.getloadavg()[0]}
    for side in ("llama.cpp", "atrium"):
        mine = [run for run in results if run.side == side]
        summary[side] = {
            "median_decode_tps": statistics.median(run.decode_tps for run in mine),
            "median_ttft_ms": statistics.median(run.ttft_s for run in mine) * 1000,
            "median_cpu_s": statistics.median(run.cpu_s for run in mine),
            "tokens": sorted({run.tokens for run in mine}),
        }
    summary["ratio_atrium_vs_llama_cpp"] = (summary["atrium"]["median_decode_tps"]
                                           / summary["llama.cpp"]["median_decode_tps"])
    # Each iteration ran one a and one b back to back: their ratio cancels most of the drift of a shared,
    # noisy machine's load.
    pairs = [results[i:i + 2] for i in range(0, len(results), 2)]
    summary["median_paired_ratio"] = statistics.median(
        next(r for r in pair if r.side == "atrium").decode_tps
        / next(r for r in pair if r.side == "llama.cpp").decode_tps
        for pair in pairs
    )
    summary["same_text"] = len({run.text for run in results}) == 1

    print(f"\n| {args.model} ({args.runs} runs/side, {args.max_tokens} max tokens) | decode tok/s (median) "
          "| TTFT ms (median) | CPU s/run (median) |")
    print("|---|---|---|---|")
    for label, side in (("llama.cpp in-process", "llama.cpp"), ("Atrium LocalChatModel", "atrium")):
        row = summary[side]
        print(f"| {label} | {row['median_decode_tps']:.2f} | {row['median_ttft_ms']:.0f} | {row['median_cpu_s']:.2f} |")
    print(f"\nratio Atrium / llama.cpp = {summary['ratio_atrium_vs_llama_cpp']:.3f} of medians, "
          f"{summary['median_paired_ratio']:.3f} median of back-to-back pairs (target >= 0.97); "
          f"identical text on both sides: {summary['same_text']}; load avg {summary['loadavg_1m_at_end']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
