"""The two chunkers and the choice between them (``knowledge.chunker``).

* ``structured`` (``chunking.chunk_text``): token-sized chunks packed at paragraph, sentence and line
  boundaries inside each heading section.
* ``window``: a plain sliding window of ``knowledge.window_words`` words, each window starting
  ``window_words - window_overlap`` words after the one before. Windows restart at every heading, so each
  chunk keeps its section's heading path (as the first line of its text, like a structured chunk) and, for a
  PDF, its page; a section shorter than one window is one chunk. Bounded in characters
  (``knowledge.max_chunk_chars``): a window too long in characters is shortened, and one word longer than
  the bound is cut hard. Not bounded in tokens: the embedding model reads the first tokens it can take.

Both are deterministic, so an unchanged section gives the same chunks again (what incremental re-ingest
relies on); an edit changes the chunks of its own section only.
"""

from __future__ import annotations

import re

from atrium.knowledge.chunking import (
    HEADING_SEPARATOR,
    BatchTokenCounter,
    Chunk,
    TokenCounter,
    _heading_prefix,
    chunk_text,
    page_of,
    split_sections,
)
from atrium.knowledge.settings import KnowledgeSettings

_WORD = re.compile(r"\S+")


def chunk_document(text: str, count_tokens: TokenCounter, settings: KnowledgeSettings, *, markdown: bool = True,
                   paged: bool = False, count_many: BatchTokenCounter | None = None) -> list[Chunk]:
    """``text`` cut by the configured chunker. ``count_many``: the same count for many texts in one call
    (the window chunker's token counts then cost one call per document)."""
    if settings.chunker == "window":
        return window_chunks(text, count_tokens, window_words=settings.window_words,
                             overlap_words=settings.window_overlap, markdown=markdown,
                             max_chars=settings.max_chunk_chars, paged=paged, count_many=count_many)
    return chunk_text(text, count_tokens, max_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap,
                      markdown=markdown, max_chars=settings.max_chunk_chars, paged=paged)


def window_chunks(text: str, count_tokens: TokenCounter, *, window_words: int = 200, overlap_words: int = 40,
                  markdown: bool = True, max_chars: int = 3000, paged: bool = False,
                  count_many: BatchTokenCounter | None = None) -> list[Chunk]:
    """Cut ``text`` into windows of at most ``window_words`` words overlapping by ``overlap_words``, inside
    each heading section, each at most ``max_chars`` characters (heading line included)."""
    if window_words < 8:
        raise ValueError("window_words must be at least 8")
    if not 0 <= overlap_words <= window_words // 2:
        raise ValueError("overlap_words must be between 0 and window_words // 2")
    if max_chars < 64:
        raise ValueError("max_chars must be at least 64")
    pieces: list[tuple[str, str, int | None]] = []  # text, heading path, page
    for section in split_sections(text, markdown=markdown):
        prefix = _heading_prefix(section.headings, count_tokens, 10**9, max_chars // 4)
        page = page_of(section.headings) if paged else None
        for body in _windows(section.body, window_words, overlap_words, max_chars - len(prefix)):
            pieces.append((prefix + body, HEADING_SEPARATOR.join(section.headings), page))
    texts = [piece[0] for piece in pieces]
    counts = count_many(texts) if count_many is not None else [count_tokens(piece) for piece in texts]
    return [Chunk(ordinal=ordinal, heading_path=heading, text=piece_text, token_count=count, page=page)
            for ordinal, ((piece_text, heading, page), count) in enumerate(zip(pieces, counts, strict=True))]


def _windows(body: str, size: int, overlap: int, max_chars: int) -> list[str]:
    """The word windows of ``body`` as slices of it (its own spacing and line breaks kept)."""
    spans = [match.span() for match in _WORD.finditer(body)]
    windows: list[str] = []
    start = 0
    while start < len(spans):
        end = min(start + size, len(spans))
        if spans[end - 1][1] - spans[start][0] > max_chars:  # the most words from ``start`` that fit
            fits = [stop for stop in range(start + 1, end + 1) if spans[stop - 1][1] - spans[start][0] <= max_chars]
            end = fits[-1] if fits else start + 1
        first, last = spans[start][0], spans[end - 1][1]
        if last - first > max_chars:  # one word longer than a whole chunk
            windows.extend(body[i:min(i + max_chars, last)] for i in range(first, last, max_chars))
        else:
            windows.append(body[first:last])
        if end == len(spans):
            break
        start = max(end - overlap, start + 1)
    return windows
