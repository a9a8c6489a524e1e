"""Is every claim of an answer backed by a source? The citation rules of ``knowledge/answering.py``,
applied sentence by sentence.

A sentence is backed when it cites a source the turn has ([n]), or, when it cites none, when most of its
content words are found in one source (``cite``'s overlap rule). Sentences without content words ("Sure.")
make no claim. An answer that says it does not know makes none either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from atrium.knowledge.answering import Source, cite

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAIM_WORD = re.compile(r"[^\W\d_]{3,}")
_CITATION = re.compile(r"\s*\[\d{1,3}\]")
_UNKNOWN = re.compile(r"\b(don't|do not|doesn't|does not|cannot|can't) (know|say|find|tell)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Verdict:
    backed: bool
    unbacked: tuple[str, ...] = ()
    cited: tuple[Source, ...] = ()  # the sources with ``cited`` set for the whole answer


def says_unknown(answer: str) -> bool:
    return bool(_UNKNOWN.search(answer))


def check_claims(answer: str, sources: Sequence[Source], texts: Sequence[str]) -> Verdict:
    cited = tuple(cite(answer, sources, texts))
    if says_unknown(answer) and not any(source.cited_by == "model" for source in cited):
        return Verdict(True, (), cited)
    unbacked = []
    for sentence in (part.strip() for part in _SENTENCE.split(answer)):
        if not _CLAIM_WORD.search(_CITATION.sub("", sentence)):
            continue
        if not any(source.cited for source in cite(sentence, sources, texts)):
            unbacked.append(sentence)
    return Verdict(not unbacked and bool(answer.strip()), tuple(unbacked), cited)
