"""The demo collection: Atrium's own docs, ingested on first start so a new user can ask about Atrium."""

from __future__ import annotations

from pathlib import Path

from atrium.knowledge.ingest import discover, ingest_files
from atrium.knowledge.service import KnowledgeService

DEMO_COLLECTION = "atrium-docs"


def docs_dir() -> Path | None:
    """``docs/`` of a source checkout, or the copy packaged inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "docs", here / "_docs"):
        if candidate.is_dir():
            return candidate
    return None


async def ingest_demo(knowledge: KnowledgeService, tenant: str) -> int:
    folder = docs_dir()
    if folder is None:
        return 0
    summary = await ingest_files(knowledge, tenant, DEMO_COLLECTION, discover([folder]))
    return len(summary.results)
