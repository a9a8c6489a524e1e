"""What re-ingesting costs, against the first ingest: the texts the model embeds, wall and CPU time.

Ingests one dev-set corpus (bench/retrieval_eval, default Scrapy) into a fresh SQLite data dir with the
bundled ONNX model behind the embedding cache (as ``atrium serve`` builds it) and the configured chunker,
then:

1. ingests the unchanged corpus again (every page ``unchanged``);
2. uploads the same pages again under other source names (another collection): the embedding cache answers
   every chunk; the same re-upload through a second data dir with the cache off shows what it saves;
3. edits one paragraph of the largest page and ingests the corpus again (the other pages are
   ``unchanged``; the edited one keeps its unchanged chunks).

The model is wrapped to count the texts it is given. CPU is this process's (all threads).

Usage: python bench/reingest_cost.py [--source scrapy] [--chunker window|structured]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from atrium.gateway.ports import Embedder, EmbedKind, Vectors
from atrium.knowledge.embedders.cache import CachingEmbedder, SqlVectorStore
from atrium.knowledge.embedders.factory import model_fingerprint
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder
from atrium.knowledge.ingest import IngestSummary, discover, ingest_files
from atrium.knowledge.keyword import SqliteKeywordSearch
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import EmbeddingSettings, KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization

CACHE = Path(__file__).resolve().parent / ".cache" / "retrieval_eval"


class Counting:
    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dimensions, self.texts = inner, inner.name, inner.dimensions, 0

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        self.texts += len(texts)
        return await self.inner.embed(texts, kind=kind)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


async def knowledge(folder: Path, model: OnnxEmbedder, chunker: str, *, cache: bool) -> tuple[KnowledgeService,
                                                                                                Counting]:
    url = f"sqlite+aiosqlite:///{folder}/atrium.db"
    await asyncio.to_thread(folder.mkdir, parents=True)
    await asyncio.to_thread(upgrade, url)
    db = Database(build_engine(url))
    counted = Counting(model)
    embedder: Embedder = counted
    if cache:
        embedder = CachingEmbedder(counted, SqlVectorStore(db),
                                   fingerprint=model_fingerprint(EmbeddingSettings(), model))
    service = KnowledgeService(db, embedder, HnswVectorIndex(None, model.dimensions), SqliteKeywordSearch(),
                               KnowledgeSettings(chunker=chunker))  # type: ignore[arg-type]
    async with db.system_session() as session:
        session.add(Organization(id="bench", name="bench"))
    return service, counted


async def measure(label: str, counted: Counting, step: Callable[[], Awaitable[IngestSummary]],
                  first: tuple[float, float] | None = None) -> tuple[float, float]:
    counted.texts = 0
    cpu, wall = time.process_time(), time.perf_counter()
    summary = await step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    share = f" | {100 * wall / first[0]:.1f}% | {100 * cpu / first[1]:.1f}%" if first else " | 100% | 100%"
    print(f"| {label} | {summary.to_dict()['counts']} | {summary.to_dict()['chunks']} | {counted.texts} | "
          f"{wall:.2f} | {cpu:.2f}{share} |", flush=True)
    return wall, cpu


async def run(source: str, chunker: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for path, name in discover([CACHE / source / "corpus"]):
            (corpus / name).parent.mkdir(parents=True, exist_ok=True)
            (corpus / name).write_bytes(path.read_bytes())
        model = OnnxEmbedder()
        service, counted = await knowledge(Path(tmp) / "data", model, chunker, cache=True)
        files = discover([corpus])
        print(f"{source} ({len(files)} pages), chunker {chunker}, load average "
              f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        print("| step | documents | chunks | texts embedded | wall s | CPU s | wall vs first | CPU vs first |")
        print("|---|---|---|---|---|---|---|---|")
        first = await measure("first ingest", counted, lambda: ingest_files(service, "bench", source, files))
        await measure("unchanged corpus again", counted, lambda: ingest_files(service, "bench", source, files), first)
        renamed = [(path, f"copy/{name}") for path, name in files]
        await measure("re-upload under other names, cache on", counted,
                      lambda: ingest_files(service, "bench", "copy", renamed), first)
        plain, plain_counted = await knowledge(Path(tmp) / "plain", model, chunker, cache=False)
        await ingest_files(plain, "bench", source, files)
        await measure("re-upload under other names, cache off", plain_counted,
                      lambda: ingest_files(plain, "bench", "copy", renamed), first)
        await plain.db.dispose()
        # Edit one paragraph in the middle of the largest page.
        largest = max((path for path, _ in files), key=lambda path: path.stat().st_size)
        paragraphs = largest.read_text().split("\n\n")
        middle = len(paragraphs) // 2
        paragraphs[middle] = paragraphs[middle] + " This sentence was added by the re-ingest benchmark."
        largest.write_text("\n\n".join(paragraphs))
        await measure(f"one paragraph of {largest.name} edited", counted,
                      lambda: ingest_files(service, "bench", source, files), first)
        await service.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="scrapy")
    parser.add_argument("--chunker", default="window", choices=["window", "structured"])
    args = parser.parse_args()
    asyncio.run(run(args.source, args.chunker))


if __name__ == "__main__":
    main()
