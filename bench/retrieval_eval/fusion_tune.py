"""Tune hybrid search's fusion (issue 14) on the FAQ dev sets, without re-ingesting per setting.

Hybrid search fuses the vector and keyword rankings of ``knowledge.candidates`` chunks each. This script
asks a running ``atrium serve`` once per question for exactly those two rankings (``mode=vector`` and
``mode=keyword`` with ``limit=candidates``: the service searches ``max(limit, candidates)`` deep, so they are
the lists hybrid fuses), then fuses them offline with ``atrium.knowledge.fusion.fuse`` -- the code the
service runs -- for every method and weight on a grid, keeping the top ``--limit`` chunks as hybrid does.

Judged by document like bench/retrieval_quality.py (R@1, R@5, MRR@10). Against overfitting, a weight is
also chosen by leave-one-project-out: tuned on three projects, scored on the fourth; the pooled
held-out figures are reported beside the in-sample ones.

Usage::

    python bench/retrieval_eval/fusion_tune.py --data-dir /tmp/fusion-data --out tune.json
    python bench/retrieval_eval/fusion_tune.py --rankings tune.json --compare zscore@0.6   # offline again

Methods tuned: ``weighted_rrf``, ``convex`` (min-max) and ``zscore``; ``--compare`` scores chosen
method@weight pairs per project against keyword and vector.

``--data-dir``: a data dir into which each project was ingested into its own collection (``atrium ingest
bench/.cache/retrieval_eval/<p>/corpus --collection <p>``); ingested here if it holds no database yet.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import sys
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parents[1]
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import retrieval_quality as rq  # noqa: E402
from atrium.knowledge.fusion import FusionMethod, fuse  # noqa: E402

WEIGHTS = [round(0.05 * i, 2) for i in range(0, 21)]
TUNED = ("weighted_rrf", "convex", "zscore")
Ranking = list[tuple[int, float]]


def fetch_rankings(client: httpx.Client, questions: list[dict], depth: int) -> list[dict]:
    """Per question: the vector and keyword rankings (chunk id, score) and each chunk's page."""
    rows = []
    for question in questions:
        row: dict = {"id": question["id"], "project": question["project"], "gold": question["gold"],
                     "source": {}}
        for mode in ("vector", "keyword"):
            payload, _ = rq.search(client, question["question"], mode, question["project"], depth)
            row[mode] = [(hit["chunk_id"], hit["score"]) for hit in payload["results"]]
            for hit in payload["results"]:
                row["source"][hit["chunk_id"]] = str(hit["source"]).replace("\\", "/").removeprefix("./")
        rows.append(row)
    return rows


def rank_of(row: dict, ranked: Ranking) -> int | None:
    sources = []
    for chunk_id, _ in ranked:
        source = row["source"][chunk_id]
        if source not in sources:
            sources.append(source)
    return rq.gold_rank(sources, row["gold"])


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "r1": sum(r == 1 for r in ranks) / n,
        "r5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr10": sum(1 / r for r in ranks if r is not None and r <= 10) / n,
    }


def ranks_for(rows: list[dict], method: str, weight: float, limit: int, rrf_k: int) -> list[int | None]:
    out = []
    for row in rows:
        if method == "vector":
            ranked = row["vector"][:limit]
        elif method == "keyword":
            ranked = row["keyword"][:limit]
        else:
            fusion: FusionMethod = method  # type: ignore[assignment]
            ranked = fuse(row["vector"], row["keyword"], method=fusion, vector_weight=weight, k=rrf_k, limit=limit)
        out.append(rank_of(row, ranked))
    return out


def objective(m: dict[str, float]) -> tuple[float, float, float]:
    return (m["mrr10"], m["r5"], m["r1"])


def best_weight(rows: list[dict], method: str, limit: int, rrf_k: int) -> float:
    """The grid weight with the best MRR@10 (then R@5, R@1) on ``rows``; ties go to the weight nearest 0.5
    (the least extreme)."""
    scored = [(objective(metrics(ranks_for(rows, method, w, limit, rrf_k))), -abs(w - 0.5), w) for w in WEIGHTS]
    return max(scored)[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=rq.DEFAULT_CACHE_DIR)
    parser.add_argument("--sources", default="all")
    parser.add_argument("--candidates", type=int, default=30, help="knowledge.candidates of the server")
    parser.add_argument("--limit", type=int, default=10, help="chunks kept after fusion (as the quality bench)")
    parser.add_argument("--rrf-k", type=int, default=60)
    parser.add_argument("--atrium", default=str(rq.REPO_DIR / ".venv" / "bin" / "atrium"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--compare", default="weighted_rrf@0.75,zscore@0.6",
                        help="method@weight pairs scored per project against the single modes")
    parser.add_argument("--rankings", type=Path, default=None,
                        help="the rankings of an earlier --out (no server, no searches)")
    args = parser.parse_args(argv)
    if args.data_dir is None and args.rankings is None:
        parser.error("give --data-dir (search a server) or --rankings (an earlier --out)")

    sources = rq.build_dataset_module().parse_sources(args.sources)
    questions: list[dict] = []
    for source in sources:
        questions.extend(rq.load_dataset(args.cache_dir / source.name)[0])
    # A reused data dir already has its admin: give its key (``atrium keys create``) in BENCH_API_KEY.
    admin_key = os.environ.get("BENCH_API_KEY") or "atr_" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")},
        "ATRIUM_DATA_DIR": str(args.data_dir),
        "ATRIUM_BOOTSTRAP_ADMIN_KEY": admin_key,
        "ATRIUM_CHAT__PROVIDER": "fake",
        "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
        "ATRIUM_KNOWLEDGE__CANDIDATES": str(args.candidates),
        "ATRIUM_KNOWLEDGE__RERANK__ENABLED": "off",  # the plain rankings, whatever models the data dir has
    }
    if args.rankings is not None:
        rows = json.loads(args.rankings.read_text(encoding="utf-8"))["rankings"]
        for row in rows:
            row["vector"] = [tuple(pair) for pair in row["vector"]]
            row["keyword"] = [tuple(pair) for pair in row["keyword"]]
            row["source"] = {int(k): v for k, v in row["source"].items()}
        return report_on(rows, args)
    if not any(args.data_dir.glob("*.db")):
        for source in sources:
            rq.run_ingest(args.atrium, args.cache_dir / source.name / "corpus", source.name, env)
    port = rq.free_port()
    log_path = args.data_dir / "tune-serve.log"
    server = rq.start_server(args.atrium, port, env, log_path)
    try:
        headers = {"Authorization": f"Bearer {admin_key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as client:
            rq.wait_ready(client, server, log_path, 600)
            rows = fetch_rankings(client, questions, args.candidates)
    finally:
        rq.stop_server(server)
    return report_on(rows, args)


def report_on(rows: list[dict], args: argparse.Namespace) -> int:
    """The grid, the leave-one-project-out check and the per-project comparison; printed, and written to
    ``--out`` with the rankings."""
    projects = sorted({row["project"] for row in rows})
    report: dict = {"questions": len(rows), "projects": projects, "grid": {}, "chosen": {}, "held_out": {}}
    for single in ("keyword", "vector"):
        report["grid"][single] = metrics(ranks_for(rows, single, 0.0, args.limit, args.rrf_k))
    report["grid"]["rrf"] = metrics(ranks_for(rows, "rrf", 0.5, args.limit, args.rrf_k))
    for method in TUNED:
        report["grid"][method] = {
            str(w): metrics(ranks_for(rows, method, w, args.limit, args.rrf_k)) for w in WEIGHTS
        }
        report["chosen"][method] = best_weight(rows, method, args.limit, args.rrf_k)
        # Leave one project out: the weight is tuned on the others and scored on it.
        ranks: list[int | None] = []
        folds = {}
        for held in projects:
            train = [r for r in rows if r["project"] != held]
            test = [r for r in rows if r["project"] == held]
            w = best_weight(train, method, args.limit, args.rrf_k)
            folds[held] = w
            ranks.extend(ranks_for(test, method, w, args.limit, args.rrf_k))
        report["held_out"][method] = {"weights": folds, **metrics(ranks)}

    lines = ["| fusion | R@1 | R@5 | MRR@10 |", "|---|---|---|---|"]
    for name in ("keyword", "vector", "rrf"):
        m = report["grid"][name]
        lines.append(f"| {name} | {m['r1']:.3f} | {m['r5']:.3f} | {m['mrr10']:.3f} |")
    for method in TUNED:
        w = report["chosen"][method]
        m = report["grid"][method][str(w)]
        lines.append(f"| {method} w={w} (tuned on all) | {m['r1']:.3f} | {m['r5']:.3f} | {m['mrr10']:.3f} |")
        h = report["held_out"][method]
        lines.append(f"| {method} leave-one-project-out | {h['r1']:.3f} | {h['r5']:.3f} | {h['mrr10']:.3f} |")
    lines += ["", "| weight | " + " | ".join(f"{m} R@5 / MRR@10" for m in TUNED) + " |",
              "|---|" + "---|" * len(TUNED)]
    for w in WEIGHTS:
        cells = " | ".join(f"{report['grid'][m][str(w)]['r5']:.3f} / {report['grid'][m][str(w)]['mrr10']:.3f}"
                           for m in TUNED)
        lines.append(f"| {w} | {cells} |")
    # Per project, each candidate at a given weight (--compare) against the single modes: MRR@10.
    compare = [("keyword", 0.0), ("vector", 0.0), ("rrf", 0.5)] + [
        (item.split("@")[0], float(item.split("@")[1])) for item in args.compare.split(",") if item]
    report["by_project"] = {}
    lines += ["", "| project (questions) | " + " | ".join(f"{m}@{w}" if m in TUNED else m for m, w in compare)
              + " |", "|---|" + "---|" * len(compare)]
    for project in [*projects, "pooled"]:
        subset = rows if project == "pooled" else [r for r in rows if r["project"] == project]
        scored = {f"{m}@{w}": metrics(ranks_for(subset, m, w, args.limit, args.rrf_k)) for m, w in compare}
        report["by_project"][project] = scored
        lines.append(f"| {project} ({len(subset)}) | "
                     + " | ".join(f"{c['r5']:.3f} / {c['mrr10']:.3f}" for c in scored.values()) + " |")
    for m, w in compare[3:]:
        name = f"{m}@{w}"
        wins = sum(report["by_project"][p][name]["mrr10"] >= max(report["by_project"][p]["keyword@0.0"]["mrr10"],
                                                                 report["by_project"][p]["vector@0.0"]["mrr10"])
                   for p in projects)
        lines.append(f"\n{name}: MRR@10 at least the better single mode's on {wins} of {len(projects)} projects")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        report["markdown"] = table
        report["rankings"] = rows
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
