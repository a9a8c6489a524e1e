"""Real English documentation text for the ingestion benchmarks: the retrieval dev sets' corpora
(``bench/retrieval_eval/build_dataset.py --sources all`` writes them under ``bench/.cache/retrieval_eval``),
cut into files or chunk-sized texts. Deterministic: the same cache gives the same texts."""

from __future__ import annotations

import os
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache" / "retrieval_eval"


def corpus_words() -> list[str]:
    """Every word of every dev-set page, in a fixed order (projects, then pages, sorted)."""
    pages = sorted(CACHE.glob("*/corpus/**/*.txt"))
    if not pages:
        raise SystemExit(f"no corpus under {CACHE}: run bench/retrieval_eval/build_dataset.py --sources all")
    words: list[str] = []
    for page in pages:
        words.extend(page.read_text(encoding="utf-8", errors="replace").split())
    return words


def write_files(folder: Path, count: int, size_kb: int) -> list[Path]:
    """``count`` distinct text files of about ``size_kb`` KB each (paragraphs of 60 words), made of
    consecutive stretches of the corpus (it is cycled through when too short, shifted by one word per
    round so no two files share a chunk)."""
    words = corpus_words()
    folder.mkdir(parents=True, exist_ok=True)
    paths, position, rounds = [], 0, 0
    for number in range(count):
        paragraphs: list[str] = []
        size = 0
        while size < size_kb * 1024:
            if position + 60 > len(words):
                rounds += 1
                position = rounds
            paragraph = " ".join(words[position:position + 60])
            position += 60
            paragraphs.append(paragraph)
            size += len(paragraph) + 2
        path = folder / f"doc-{number:03d}.txt"
        path.write_text("\n\n".join(paragraphs), encoding="utf-8")
        paths.append(path)
    return paths


def chunk_sized_texts(count: int, words_per_text: int = 200) -> list[str]:
    """``count`` consecutive stretches of ``words_per_text`` corpus words (what the window chunker makes)."""
    words = corpus_words()
    return [" ".join(words[start:start + words_per_text])
            for start in range(0, count * words_per_text, words_per_text)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min), {os.cpu_count()} CPUs, {time.strftime('%H:%M')}"
