"""Highlighted snippets: the short window of a chunk around its best match with a query.

A word matches a query term when both reduce to the same light stem (lower case, a common English ending
such as ``-s``, ``-es``, ``-ed``, ``-ing``, ``-ly`` removed), so ``index`` finds ``indexes`` and
``indexing``. The snippet is the window of at most ``width`` characters, cut at word boundaries, holding
the most distinct query terms (ties: the earliest); ``highlights`` are the ``[start, end)`` character
offsets of the matched words inside the snippet.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from atrium.knowledge.keyword import query_terms

SNIPPET_CHARS = 300
_WORD_CHAR = re.compile(r"\w")
_WORD_AT = re.compile(r"\w+")
_ENDINGS = ("ingly", "edly", "ing", "ed", "ly")
# Words too common to show where a passage answers a query; a query made only of them highlights them.
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i if in into is it its my of on or so that the "
    "their there these this to was we were what when where which who why will with you your".split()
)


@dataclass(frozen=True, slots=True)
class Snippet:
    text: str
    highlights: tuple[tuple[int, int], ...]


def stem(word: str) -> str:
    """A light stem: lower case, a plural or ``-ed``/``-ing``/``-ly`` ending and a final ``e`` removed
    (``configures``, ``configured``, ``configuring`` -> ``configur``); short words stay as they are."""
    word = word.lower()
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            word = word[: -len(ending)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":  # running -> run
                word = word[:-1]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> Snippet:
    """The window of ``text`` (at most ``width`` characters) around its best match with ``query``, with the
    offsets of the matched words; the start of ``text`` when nothing matches."""
    stems, prefixes = _query_stems(query)
    matches = [(start, end, stem_) for start, end in _words_starting(text, prefixes)
               if (stem_ := _cached_stem(text[start:end])) in stems]
    start = _best_start(text, matches, width)
    end = _cut_end(text, start, width)
    shown = text[start:end]
    highlights = tuple((s - start, e - start) for s, e, _ in matches if s >= start and e <= end)
    return Snippet(shown, highlights)


@functools.lru_cache(maxsize=4096)
def _query_stems(query: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The query's stems, and the prefixes of the words that may have one of them: a word's stem is a prefix
    of the lower-cased word, except that ``-ies`` became ``-y``. Stemming only the words found by these
    prefixes, not every word of every hit, keeps snippets cheap (they run on the event loop, for each hit)."""
    terms = query_terms(query)
    stems = frozenset({stem(term) for term in terms if term not in _STOPWORDS} or {stem(term) for term in terms})
    prefixes = set(stems) | {s[:-1] + "i" for s in stems if s.endswith("y") and len(s) > 1}
    return stems, tuple(sorted(prefixes))


def _words_starting(text: str, prefixes: tuple[str, ...]) -> list[tuple[int, int]]:
    """``[start, end)`` of each word of ``text`` whose lower-case form starts with one of ``prefixes``, in
    order (substring search in C, then a word-boundary check per find)."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: offsets would shift
        pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, prefixes)) + r")\w*", re.IGNORECASE)
        return [(m.start(), m.end()) for m in pattern.finditer(text)] if prefixes else []
    found: dict[int, int] = {}
    for prefix in prefixes:
        at = lowered.find(prefix)
        while at >= 0:
            if at not in found and (at == 0 or not _WORD_CHAR.match(lowered, at - 1)):
                word = _WORD_AT.match(lowered, at)
                if word is not None:
                    found[at] = word.end()
            at = lowered.find(prefix, at + 1)
    return sorted(found.items())


@functools.lru_cache(maxsize=65536)
def _cached_stem(word: str) -> str:
    return stem(word)


def _best_start(text: str, matches: list[tuple[int, int, str]], width: int) -> int:
    """Where the window holding the most distinct matched stems starts (a little before its first match)."""
    if not matches or len(text) <= width:
        return 0
    best, best_count = 0, 0
    for i, (first, _, _) in enumerate(matches):
        seen = {stem_ for s, e, stem_ in matches[i:] if e - first <= width}
        if len(seen) > best_count:
            best, best_count = first, len(seen)
    # Some context before the first match, from a word boundary, without pushing matches out of the window.
    lead = max(0, best - width // 5)
    boundary = text.find(" ", lead, best)
    start = boundary + 1 if boundary >= 0 and lead > 0 else lead
    if start > len(text) - width:  # near the end: a full window, from the next word boundary
        start = max(0, len(text) - width)
        boundary = text.find(" ", start, best)
        start = boundary + 1 if start > 0 and boundary >= 0 else start
    return start


def _cut_end(text: str, start: int, width: int) -> int:
    end = min(len(text), start + width)
    if end < len(text):
        boundary = text.rfind(" ", start + width // 2, end)
        if boundary > 0:
            end = boundary
    return end
