"""The window chunker, chunk pages, the re-ingest plan and highlighted snippets (issue 14)."""

from __future__ import annotations

import pytest

from atrium.knowledge import reingest
from atrium.knowledge.chunkers import chunk_document, window_chunks
from atrium.knowledge.chunking import chunk_text
from atrium.knowledge.formats import parse_pdf
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.snippets import snippet, stem
from tests.document_files import make_pdf


def words(text: str) -> int:
    return len(text.split())


def test_windows_of_200_words_overlap_by_40() -> None:
    text = " ".join(f"w{i}" for i in range(450))
    chunks = window_chunks(text, words, window_words=200, overlap_words=40, markdown=False)
    assert [(c.text.split()[0], c.text.split()[-1]) for c in chunks] == [("w0", "w199"), ("w160", "w359"),
                                                                       ("w320", "w449")]
    assert [c.ordinal for c in chunks] == [0, 1, 2] and all(c.page is None for c in chunks)


def test_windows_restart_at_headings_and_keep_the_heading_path() -> None:
    text = "# Guide\n\n## Install\n\n" + " ".join(["pip"] * 250) + "\n\n## Use\n\nRun it.\n"
    chunks = window_chunks(text, words, window_words=200, overlap_words=40)
    assert [c.heading_path for c in chunks] == ["Guide > Install", "Guide > Install", "Guide > Use"]
    assert chunks[0].text.startswith("Guide > Install\n\npip") and chunks[2].text == "Guide > Use\n\nRun it."


def test_windows_are_bounded_in_characters() -> None:
    text = "# Long\n\n" + " ".join(["abcdefghij"] * 400) + " " + "x" * 5000
    chunks = window_chunks(text, words, window_words=200, overlap_words=40, max_chars=700)
    assert all(len(c.text) <= 700 for c in chunks)
    assert "".join(c.text.removeprefix("Long\n\n") for c in chunks if "x" in c.text).count("x") >= 5000


def test_the_setting_chooses_the_chunker() -> None:
    text = " ".join(f"w{i}" for i in range(300))
    window = chunk_document(text, words, KnowledgeSettings(chunker="window"), markdown=False)
    structured = chunk_document(text, words, KnowledgeSettings(chunker="structured", chunk_tokens=64,
                                                               chunk_overlap=0), markdown=False)
    assert [words(c.text) for c in window] == [200, 140]
    assert all(words(c.text) <= 64 for c in structured) and len(structured) >= 5
    with pytest.raises(ValueError):
        KnowledgeSettings(chunker="window", window_words=50, window_overlap=30)


@pytest.mark.parametrize("chunker", ["structured", "window"])
def test_pdf_chunks_carry_their_page(chunker: str) -> None:
    text = parse_pdf(make_pdf(["Cover.", "Second page text.", "Third page text."])).text
    chunks = chunk_document(text, words, KnowledgeSettings(chunker=chunker), paged=True)
    assert [(c.page, c.heading_path) for c in chunks] == [(1, "Page 1"), (2, "Page 2"), (3, "Page 3")]
    # Not paged (a Markdown file with a "Page 2" heading): no page numbers.
    assert all(c.page is None for c in chunk_text("# Page 2\n\nText.", words))


def test_the_plan_keeps_unchanged_chunks_and_renumbers_them() -> None:
    old_pieces = chunk_text("# A\n\none\n\n# B\n\ntwo\n\n# C\n\nthree", words)
    old = [reingest.OldChunk(100 + p.ordinal, p.ordinal, reingest.chunk_key(p.heading_path, p.page, p.text))
           for p in old_pieces]
    new_pieces = chunk_text("# Z\n\nzero\n\n# A\n\none\n\n# C\n\nthree", words)
    plan = reingest.plan(old, new_pieces)
    assert plan.new == [0] and plan.removed == [101]
    assert {i: chunk.id for i, chunk in plan.kept.items()} == {1: 100, 2: 102}
    # The same text under another heading or page is another chunk.
    assert reingest.chunk_key("A", None, "x") != reingest.chunk_key("B", None, "x")
    assert reingest.chunk_key("A", 1, "x") != reingest.chunk_key("A", 2, "x")


def test_light_stems() -> None:
    assert {stem(w) for w in ("configure", "configures", "configured", "configuring")} == {"configur"}
    assert {stem(w) for w in ("index", "indexes", "indexing")} == {"index"}
    assert stem("policies") == stem("policy") and stem("classes") == stem("class") and stem("status") == "status"


def test_snippet_is_the_window_around_the_best_match() -> None:
    text = "Intro words here. " * 30 + "To configure the indexes, run the indexing command. " + "Filler. " * 60
    shown = snippet(text, "How do I configure indexing?")
    assert len(shown.text) <= 300 and shown.text in text and "configure the indexes" in shown.text
    assert [shown.text[a:b] for a, b in shown.highlights] == ["configure", "indexes", "indexing"]
    assert not shown.text.startswith(" ")
    unmatched = snippet(text, "zebra")
    assert unmatched.text == text[:len(unmatched.text)] and unmatched.highlights == ()
    short = snippet("Refunds take 14 days.", "refund days")
    assert short.text == "Refunds take 14 days." and [short.text[a:b] for a, b in short.highlights] == [
        "Refunds", "days"]
    # Only common words: they are what there is to mark.
    assert snippet("how it is", "how is").highlights == ((0, 3), (7, 9))


def test_snippet_finds_every_word_of_a_matching_stem_and_only_whole_words() -> None:
    """Words are found by their stem's prefix (a ``-ies`` word by its ``-y`` stem's), upper case included,
    never inside another word; a text whose lower case changes length (``İ``) takes the slower path and
    gives the same offsets."""
    text = "Policies: the POLICY applies. Depolicy is not one; policy_x is one word."
    shown = snippet(text, "policy")
    assert [text[s:e] for s, e in shown.highlights] == ["Policies", "POLICY"]
    for prefix in ("İ ", ""):
        widened = prefix + "Running runners run. Rerun."
        found = snippet(widened, "run")
        assert [widened[s:e] for s, e in found.highlights] == ["Running", "run"], prefix
