"""What re-ingesting costs after a small edit: the texts embedded and the time, against the first ingest.

Ingests one dev-set corpus (bench/retrieval_eval, default Scrapy) into a fresh SQLite data dir with the
bundled ONNX model and the configured chunker, then edits one paragraph of one page and ingests the whole
corpus again (the other pages are ``unchanged``; the edited one keeps its unchanged chunks). The embedder is
wrapped to count the texts it is given.

Usage: python bench/reingest_cost.py [--source scrapy] [--chunker window|structured]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from atrium.gateway.ports import Embedder, Vectors
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder
from atrium.knowledge.ingest import discover, ingest_files
from atrium.knowledge.keyword import SqliteKeywordSearch
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization

CACHE = Path(__file__).resolve().parent / ".cache" / "retrieval_eval"


class Counting:
    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dimensions, self.texts = inner, inner.name, inner.dimensions, 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += len(texts)
        return await self.inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


async def run(source: str, chunker: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for path, name in discover([CACHE / source / "corpus"]):
            (corpus / name).parent.mkdir(parents=True, exist_ok=True)
            (corpus / name).write_bytes(path.read_bytes())
        url = f"sqlite+aiosqlite:///{tmp}/atrium.db"
        upgrade(url)
        db = Database(build_engine(url))
        embedder = Counting(OnnxEmbedder())
        service = KnowledgeService(db, embedder, HnswVectorIndex(None, embedder.dimensions), SqliteKeywordSearch(),
                                   KnowledgeSettings(chunker=chunker))
        async with db.system_session() as session:
            session.add(Organization(id="bench", name="bench"))
        files = discover([corpus])
        started = time.perf_counter()
        first = await ingest_files(service, "bench", source, files)
        first_s, first_texts = time.perf_counter() - started, embedder.texts
        # Edit one paragraph in the middle of the largest page.
        largest = max((path for path, _ in files), key=lambda path: path.stat().st_size)
        paragraphs = largest.read_text().split("\n\n")
        middle = len(paragraphs) // 2
        paragraphs[middle] = paragraphs[middle] + " This sentence was added by the re-ingest benchmark."
        largest.write_text("\n\n".join(paragraphs))
        embedder.texts = 0
        started = time.perf_counter()
        second = await ingest_files(service, "bench", source, files)
        second_s = time.perf_counter() - started
        await db.dispose()
    print(f"{source}, chunker {chunker}: first ingest {first.to_dict()['chunks']} chunks, {first_texts} texts "
          f"embedded, {first_s:.1f} s; after editing one paragraph of {largest.name} "
          f"({second.to_dict()['counts']}): {embedder.texts} texts embedded, {second_s:.2f} s "
          f"({100 * second_s / first_s:.1f}% of the first)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="scrapy")
    parser.add_argument("--chunker", default="window", choices=["window", "structured"])
    args = parser.parse_args()
    asyncio.run(run(args.source, args.chunker))


if __name__ == "__main__":
    main()
