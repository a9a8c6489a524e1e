"""Grounded answers: retrieve, number the sources, prompt the model to cite them, map citations back.

When retrieval finds nothing relevant enough, the model is not called at all: the answer is the fixed
"I don't know" text, so an empty context can never produce an invented answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from atrium.gateway.ports import ChatMessage
from atrium.knowledge.service import KnowledgeService, SearchHit
from atrium.knowledge.snippets import SNIPPET_CHARS, snippet

if TYPE_CHECKING:
    from atrium.guard.pipeline import Admitted

NO_ANSWER = "I don't know: the documents I can search do not cover this question."

# A worked example in the system prompt is what makes small local models (0.5B-1.5B) both answer and cite;
# without it they tend to reply with bare citation numbers.
SYSTEM_PROMPT = (
    "You are Atrium, a helpful assistant. Answer questions using only the numbered sources. Keep the answer "
    "short (at most four sentences). Put the number of the source you used in square brackets at the end of "
    "each sentence, like [1]. If the sources do not contain the answer, say that you don't know.\n"
    "Example:\n"
    "Sources:\n[1] Refunds are issued within 14 days.\n[2] Invoices are emailed monthly.\n"
    "Question: How long do refunds take?\n"
    "Answer: Refunds are issued within 14 days [1]."
)
CITATION = re.compile(r"\[(\d{1,3})\]")
OVERLAP_SHARE = 0.5
OVERLAP_MARGIN = 0.1
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "the and for are you your can with that this from not but all any was were will would should could have has "
    "had its into than then them they there their what when where which who how use using also more most such "
    "only other some each may must need set".split()
)


@dataclass(frozen=True, slots=True)
class Source:
    number: int
    chunk_id: int
    document_id: str
    collection: str
    source: str
    title: str
    heading: str
    snippet: str
    score: float
    cited: bool = False
    # "model": the answer names this source ([n]); "overlap": the model named none, and most of the answer's
    # words are found in this source. None when not cited.
    cited_by: str | None = None
    page: int | None = None  # the PDF page the passage comes from
    # [start, end) offsets in ``snippet`` of the question's words
    highlights: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GroundedPrompt:
    messages: tuple[ChatMessage, ...]
    sources: tuple[Source, ...]
    texts: tuple[str, ...] = ()  # the full text of each source, in order
    guarded: frozenset[str] = frozenset()  # the guard stages applied to the question and the sources

    @property
    def has_context(self) -> bool:
        return bool(self.sources)


class GroundedAnswerer:
    """Builds the grounded prompt for a question (and its conversation history). With the use case's
    ``guard`` (its admitted guard pipeline), the question passes the *input* stage and every retrieved
    chunk the *context* stage before it enters the prompt (a chunk stripped to nothing is left out); the
    prompt says which stages ran (``GroundedPrompt.guarded``), so the model call does not run them again."""

    def __init__(self, knowledge: KnowledgeService, *, top_k: int, min_relevance: float) -> None:
        self.knowledge = knowledge
        self.top_k = top_k
        self.min_relevance = min_relevance

    async def prepare(self, tenant: str, question: str, history: Sequence[ChatMessage],
                      collections: Sequence[str] | None, guard: Admitted | None = None) -> GroundedPrompt:
        if guard is not None:
            question = await guard.question(question)
        hits = await self.knowledge.search(tenant, question, mode="hybrid", limit=self.top_k,
                                           collections=collections)
        chosen = relevant(hits, self.min_relevance)
        if guard is None or not chosen:
            return build_prompt(question, chosen, history)
        passages = guard.context([hit.chunk.text for hit in chosen])
        kept = [(hit, passage) for hit, passage in zip(chosen, passages, strict=True) if passage.prompt.strip()]
        # Sources show what was kept of each chunk (a stripped sentence is gone), never the guard's note.
        prompt = build_prompt(question, [replace(hit, chunk=replace(hit.chunk, text=passage.shown))
                                         for hit, passage in kept], history, [passage.prompt for _, passage in kept])
        return replace(prompt, guarded=guard.checked)


def relevant(hits: Sequence[SearchHit], min_relevance: float) -> list[SearchHit]:
    """All hits when the best semantic match clears ``min_relevance``; none otherwise."""
    best = max((hit.vector_score for hit in hits if hit.vector_score is not None), default=None)
    if best is None or best < min_relevance:
        return []
    return list(hits)


def build_prompt(question: str, hits: Sequence[SearchHit], history: Sequence[ChatMessage],
                 prompt_texts: Sequence[str] | None = None) -> GroundedPrompt:
    """``prompt_texts``: what the model is shown of each hit, when it differs from the chunk's text (a
    guard's warning before it); sources show the chunk's text."""
    texts = tuple(prompt_texts) if prompt_texts is not None else tuple(hit.chunk.text for hit in hits)
    sources = tuple(hit_source(i, hit, hit.chunk.text, question) for i, hit in enumerate(hits, start=1))
    context = "\n\n".join(
        f"[{i}] {hit.chunk.title} — {hit.chunk.heading}\n{text}"
        for i, (hit, text) in enumerate(zip(hits, texts, strict=True), start=1)
    )
    user = f"Sources:\n{context}\n\nQuestion: {question}\nAnswer:"
    messages = (ChatMessage("system", SYSTEM_PROMPT), *history, ChatMessage("user", user))
    return GroundedPrompt(messages=messages, sources=sources, texts=texts)


def hit_source(number: int, hit: SearchHit, shown: str, query: str) -> Source:
    """A retrieved chunk as the ``number``-th source; ``shown``: what of its text the source shows (after the
    guard's context stage), cut to the snippet around its best match with ``query``."""
    chunk = hit.chunk
    window = snippet(shown, query, SNIPPET_CHARS)
    return Source(number=number, chunk_id=chunk.id, document_id=chunk.document_id, collection=chunk.collection,
                  source=chunk.source, title=chunk.title, heading=chunk.heading, snippet=window.text,
                  score=round(hit.score, 6), page=chunk.page, highlights=window.highlights)


def cite(answer: str, sources: Sequence[Source], texts: Sequence[str] = ()) -> list[Source]:
    """The sources with ``cited`` set for every number the answer mentions (unknown numbers are ignored).

    Small local models sometimes answer from the sources without writing any [n]. Then, and only then, a
    source counts as cited when it holds at least ``OVERLAP_SHARE`` of the answer's content words and is
    within ``OVERLAP_MARGIN`` of the best-supported source, marked
    ``cited_by="overlap"`` so a client can tell an inferred citation from one the model wrote.
    """
    numbers = {int(match) for match in CITATION.findall(answer)} & {source.number for source in sources}
    if numbers:
        return [replace(source, cited=source.number in numbers, cited_by="model" if source.number in numbers
                        else None) for source in sources]
    answer_words = _content_words(answer)
    if not answer_words or len(texts) != len(sources):
        return [replace(source, cited=False, cited_by=None) for source in sources]
    shares = [len(answer_words & _content_words(text)) / len(answer_words) for text in texts]
    bar = max(OVERLAP_SHARE, max(shares, default=0.0) - OVERLAP_MARGIN)
    return [replace(source, cited=share >= bar, cited_by="overlap" if share >= bar else None)
            for source, share in zip(sources, shares, strict=True)]


def _content_words(text: str) -> set[str]:
    return {word for word in _WORD.findall(text.lower()) if len(word) > 2 and word not in _STOPWORDS}
