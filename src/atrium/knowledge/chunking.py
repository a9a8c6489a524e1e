"""Heading-aware, token-sized chunking of Markdown and plain text.

A document is cut into sections at Markdown headings (never inside fenced code). Each section is packed
into chunks of at most ``max_tokens`` tokens, counted with the embedding model's own tokenizer. A chunk
never mixes two sections; its text starts with the section's heading path (``Install > From source``) so
the embedding and the keyword index both see where it came from. A section too long for one chunk is cut at
paragraph, then sentence, then line, then word boundaries; each further chunk of the same section starts
with the tail (``overlap_tokens``) of the one before. A chunk is also bounded in characters (``max_chars``):
text with no boundary at all (a long run without whitespace) is cut hard at that length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from atrium.knowledge.parsing import atx_heading, markdown_lines

TokenCounter = Callable[[str], int]
"""Counts the tokens a model sees in a string (no special tokens)."""
BatchTokenCounter = Callable[[Sequence[str]], list[int]]
"""The same count for many strings in one call."""

HEADING_SEPARATOR = " > "

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")
_WORD = re.compile(r"\S+")
_PAGE = re.compile(r"^Page (\d{1,6})$")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable piece of a document. ``text`` starts with the heading path line, if any."""

    ordinal: int
    heading_path: str
    text: str
    token_count: int
    page: int | None = None  # the page it comes from, for a paged document (a PDF); None otherwise


@dataclass(frozen=True, slots=True)
class Section:
    """The body under one heading (``headings`` is the path from the top level down)."""

    headings: tuple[str, ...]
    body: str


@dataclass(frozen=True, slots=True)
class _Block:
    text: str
    is_code: bool


# A splitter cuts text into parts, and the joiner glues neighbouring parts back together.
_Level = tuple[Callable[[str], list[str]], str]
# A unit is the smallest piece the packer moves: (joiner to the previous unit, text).
_Unit = tuple[str, str]


def chunk_text(text: str, count_tokens: TokenCounter, *, max_tokens: int = 256, overlap_tokens: int = 32,
               markdown: bool = True, max_chars: int = 3000, paged: bool = False) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens and ``max_chars`` characters (heading line
    included).

    ``markdown=False`` treats ``#`` lines as ordinary text (for ``.txt`` files). Only a single word longer
    than a whole chunk is cut mid-word. ``paged``: the text's top-level headings are ``Page N`` (a PDF,
    ``formats.parse_pdf``), and each chunk gets its page number.
    """
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    if max_chars < 64:
        raise ValueError("max_chars must be at least 64")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError("overlap_tokens must be between 0 and max_tokens // 2")
    chunks: list[Chunk] = []
    for section in split_sections(text, markdown=markdown):
        heading_path = HEADING_SEPARATOR.join(section.headings)
        prefix = _heading_prefix(section.headings, count_tokens, max_tokens // 4, max_chars // 4)
        budget = _Budget(max_tokens, max_chars)
        for body in _pack_section(section.body, prefix, count_tokens, budget, overlap_tokens, markdown):
            full_text = prefix + body
            chunks.append(Chunk(ordinal=len(chunks), heading_path=heading_path, text=full_text,
                                token_count=count_tokens(full_text),
                                page=page_of(section.headings) if paged else None))
    return chunks


def page_of(headings: tuple[str, ...]) -> int | None:
    """The page number a paged document's section is under (its top heading ``Page N``), if any."""
    match = _PAGE.match(headings[0]) if headings else None
    return int(match.group(1)) if match else None


def split_sections(text: str, *, markdown: bool = True) -> list[Section]:
    """Split ``text`` at ATX headings outside fenced code; sections with an empty body are dropped."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip("\n").rstrip()
        if body.strip():
            sections.append(Section(headings=tuple(title for _, title in stack), body=body))
        lines.clear()

    for line, in_code in _lines(text, markdown):
        heading = atx_heading(line) if markdown and not in_code else None
        if heading is None:
            lines.append(line)
            continue
        flush()
        level, title = heading
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
    flush()
    return sections


def _lines(text: str, markdown: bool) -> Iterable[tuple[str, bool]]:
    return markdown_lines(text) if markdown else ((line, False) for line in text.split("\n"))


def _blocks(body: str, markdown: bool) -> list[_Block]:
    """Paragraphs split on blank lines; a fenced code block (blank lines and all) is one block."""
    blocks: list[_Block] = []
    lines: list[str] = []
    in_code_block = False

    def flush() -> None:
        if lines and "".join(lines).strip():
            blocks.append(_Block("\n".join(lines).strip("\n").rstrip(), in_code_block))
        lines.clear()

    for line, in_code in _lines(body, markdown):
        if in_code != in_code_block:
            flush()
            in_code_block = in_code
        if not in_code and not line.strip():
            flush()
            continue
        lines.append(line)
    flush()
    return blocks


def _heading_prefix(headings: tuple[str, ...], count: TokenCounter, budget: int, char_budget: int) -> str:
    """The heading path line (plus a blank line) that opens every chunk, shortened to ``budget`` tokens and
    ``char_budget`` characters."""
    if not headings:
        return ""
    for path in (HEADING_SEPARATOR.join(headings), headings[-1]):
        if count(path) <= budget and len(path) <= char_budget:
            return path + "\n\n"
    return _head(headings[-1][:char_budget], budget, count) + "\n\n"


@dataclass(frozen=True, slots=True)
class _Budget:
    """The size bounds of one chunk."""

    tokens: int
    chars: int


def _pack_section(body: str, prefix: str, count: TokenCounter, budget: _Budget, overlap_tokens: int,
                  markdown: bool) -> list[str]:
    """Greedy packing of a section's units into chunk bodies, each carrying the previous one's tail."""
    max_chars = budget.chars - len(prefix)
    # Overlap in characters, in proportion to the token overlap.
    overlap_chars = budget.chars * overlap_tokens // budget.tokens

    # The length is checked first: it is free, and it keeps huge texts away from the tokenizer.
    def fits(candidate: str) -> bool:
        return len(candidate) <= max_chars and count(prefix + candidate) <= budget.tokens

    # Units leave room for the overlap so that a chunk's carried tail is rarely dropped.
    def fits_unit(candidate: str) -> bool:
        return (len(candidate) <= max_chars - overlap_chars
                and count(prefix + candidate) <= budget.tokens - overlap_tokens)

    units: list[_Unit] = []
    for block in _blocks(body, markdown):
        levels = _CODE_LEVELS if block.is_code else _PROSE_LEVELS
        pieces = _pieces(block.text, fits_unit, levels)
        units.append(("\n\n", pieces[0][1]))
        units.extend(pieces[1:])

    bodies: list[str] = []
    current = ""
    for joiner, unit in units:
        candidate = f"{current}{joiner}{unit}" if current else unit
        if fits(candidate):
            current = candidate
            continue
        bodies.append(current)
        tail = _tail(current, overlap_tokens, overlap_chars, count) if overlap_tokens else ""
        with_tail = f"{tail}{joiner}{unit}"
        current = with_tail if tail and fits(with_tail) else unit
    if current:
        bodies.append(current)
    return bodies


def _pieces(text: str, fits: Callable[[str], bool], levels: tuple[_Level, ...]) -> list[_Unit]:
    """Cut ``text`` at the coarsest boundary that makes every piece fit."""
    if fits(text):
        return [("", text)]
    if not levels:
        return _word_pieces(text, fits)
    split, joiner = levels[0]
    parts = [part for part in split(text) if part.strip()]
    if len(parts) <= 1:
        return _pieces(text, fits, levels[1:])
    units: list[_Unit] = []
    for part in parts:
        sub = _pieces(part, fits, levels[1:])
        units.append((joiner, sub[0][1]))
        units.extend(sub[1:])
    return units


def _word_pieces(text: str, fits: Callable[[str], bool]) -> list[_Unit]:
    """Longest runs of whole words that fit; a word too long on its own is hard-cut."""
    spans = [match.span() for match in _WORD.finditer(text)]
    units: list[_Unit] = []
    start = 0
    while start < len(spans):
        first = spans[start][0]
        taken = _longest(len(spans) - start, _words_fit(text, spans, start, fits))
        if taken == 0:
            word = text[first:spans[start][1]]
            # Pieces of one word are glued back without a space if they ever share a chunk.
            units.extend(("" if i else " ", piece) for i, piece in enumerate(_hard_cut(word, fits)))
            start += 1
        else:
            units.append((" ", text[first:spans[start + taken - 1][1]]))
            start += taken
    return units


def _words_fit(text: str, spans: list[tuple[int, int]], start: int,
               fits: Callable[[str], bool]) -> Callable[[int], bool]:
    """Whether the ``n`` words from ``spans[start]`` on fit."""
    return lambda n: fits(text[spans[start][0]:spans[start + n - 1][1]])


def _hard_cut(word: str, fits: Callable[[str], bool]) -> list[str]:
    """Cut an unbreakable word into the longest fitting character runs (at least one character each)."""
    pieces: list[str] = []
    start = 0
    while start < len(word):
        size = max(1, _longest(len(word) - start, _slice_fits(word, start, fits)))
        pieces.append(word[start:start + size])
        start += size
    return pieces


def _slice_fits(text: str, start: int, fits: Callable[[str], bool]) -> Callable[[int], bool]:
    """Whether the ``n`` characters of ``text`` from ``start`` on fit."""
    return lambda n: fits(text[start:start + n])


def _tail(text: str, budget: int, char_budget: int, count: TokenCounter) -> str:
    """The longest run of whole words at the end of ``text`` within ``budget`` tokens and ``char_budget``
    characters."""
    starts = [match.start() for match in _WORD.finditer(text)]
    taken = _longest(len(starts), lambda n: len(text) - starts[-n] <= char_budget
                     and count(text[starts[-n]:]) <= budget)
    if not taken:
        return ""
    tail = text[starts[-taken]:]
    # Prefer a tail that starts at a sentence, unless that throws away more than half of it.
    boundary = _SENTENCE_END.search(tail)
    if boundary and boundary.end() < len(tail) and count(tail[boundary.end():]) >= budget // 2:
        return tail[boundary.end():]
    return tail


def _head(text: str, budget: int, count: TokenCounter) -> str:
    """The longest run of whole words at the start of ``text`` within ``budget`` tokens (or a hard cut)."""
    ends = [match.end() for match in _WORD.finditer(text)]
    taken = _longest(len(ends), lambda n: count(text[:ends[n - 1]]) <= budget)
    if taken:
        return text[:ends[taken - 1]]
    return _hard_cut(text.strip(), lambda piece: count(piece) <= budget)[0]


def _longest(limit: int, fits: Callable[[int], bool]) -> int:
    """The largest ``n`` in ``[0, limit]`` with ``fits(n)`` (``fits`` must be monotone, ``fits(0)`` true).

    Probes 1, 2, 4, ... and then bisects, so the cost follows the answer, not ``limit``: texts are
    only ever counted up to about twice the size of the piece being cut.
    """
    good, probe = 0, 1
    while probe <= limit and fits(probe):
        good, probe = probe, probe * 2
    bad = min(probe, limit + 1)
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


def _sentences(text: str) -> list[str]:
    return _SENTENCE_END.split(text)


def _lines_of(text: str) -> list[str]:
    return text.split("\n")


_PROSE_LEVELS: tuple[_Level, ...] = ((_sentences, " "), (_lines_of, "\n"))
_CODE_LEVELS: tuple[_Level, ...] = ((_lines_of, "\n"),)
