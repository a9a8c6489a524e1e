"""Grounded prompts: numbering, the relevance gate, citation mapping."""

from __future__ import annotations

from atrium.gateway.ports import ChatMessage
from atrium.knowledge.answering import build_prompt, cite, relevant
from atrium.knowledge.repository import ChunkView
from atrium.knowledge.service import SearchHit


def hit(chunk_id: int, text: str, vector_score: float | None, source: str = "a.md") -> SearchHit:
    view = ChunkView(chunk_id, f"doc{chunk_id}", "docs", source, "Title", "Title > Part", text)
    return SearchHit(view, score=0.5, vector_score=vector_score)


def test_sources_are_numbered_in_rank_order_and_put_in_the_prompt() -> None:
    hits = [hit(7, "Refunds take 14 days.", 0.8, "billing.md"), hit(3, "Invoices monthly.", 0.6, "inv.md")]
    prompt = build_prompt("How long do refunds take?", hits, [ChatMessage("user", "earlier")])
    assert [(s.number, s.chunk_id, s.source) for s in prompt.sources] == [(1, 7, "billing.md"), (2, 3, "inv.md")]
    assert prompt.messages[0].role == "system" and prompt.messages[1].content == "earlier"
    user = prompt.messages[-1].content
    assert "[1] Title — Title > Part\nRefunds take 14 days." in user
    assert user.index("[1]") < user.index("[2]") < user.index("Question: How long do refunds take?")


def test_relevance_gate_drops_everything_when_the_best_match_is_weak() -> None:
    assert relevant([hit(1, "x", 0.2), hit(2, "y", None)], 0.25) == []
    assert relevant([hit(2, "y", None)], 0.25) == []
    strong = [hit(1, "x", 0.3), hit(2, "y", None)]
    assert relevant(strong, 0.25) == strong


def test_cite_marks_only_numbers_the_answer_uses() -> None:
    prompt = build_prompt("q", [hit(1, "a", 0.9), hit(2, "b", 0.9), hit(3, "c", 0.9)], [])
    cited = cite("First fact [1]. Third [3]. Unknown [9].", prompt.sources, prompt.texts)
    assert [(s.cited, s.cited_by) for s in cited] == [(True, "model"), (False, None), (True, "model")]
    assert [s.cited for s in cite("no citations", prompt.sources, prompt.texts)] == [False, False, False]


def test_without_markers_a_source_holding_most_of_the_answer_is_cited_by_overlap() -> None:
    hits = [hit(1, "Invoices are emailed on the first day of every month.", 0.7),
            hit(2, "Set chat.provider to openai and give the API key in ATRIUM_CHAT__OPENAI__API_KEY.", 0.6)]
    prompt = build_prompt("q", hits, [])
    answer = "To add OpenAI, set the chat.provider to openai and put the API key in ATRIUM_CHAT__OPENAI__API_KEY."
    assert [(s.cited, s.cited_by) for s in cite(answer, prompt.sources, prompt.texts)] == [
        (False, None), (True, "overlap")]
    unrelated = "Penguins live in the southern hemisphere."
    assert not any(s.cited for s in cite(unrelated, prompt.sources, prompt.texts))
    # a marker the model did write wins over overlap
    assert [s.cited_by for s in cite(answer + " [1]", prompt.sources, prompt.texts)] == ["model", None]
