"""Heading-aware, token-sized chunking."""

from __future__ import annotations

import itertools
import math
import re

import pytest
from tokenizers import Tokenizer

from atrium.knowledge.chunking import Chunk, chunk_text, split_sections
from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths


def words(text: str) -> int:
    return len(text.split())


def subwords(text: str) -> int:
    """A stand-in for a subword tokenizer: every 4 characters of a word make a token."""
    return sum(math.ceil(len(word) / 4) for word in text.split())


@pytest.fixture(scope="module")
def minilm_tokens() -> object:
    tokenizer = Tokenizer.from_file(str(bundled_model_paths()[1]))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def body(chunk: Chunk) -> str:
    """The chunk text without its heading path line."""
    prefix = chunk.heading_path + "\n\n" if chunk.heading_path else ""
    assert chunk.text.startswith(prefix)
    return chunk.text[len(prefix):]


def sentences(count: int, tag: str) -> str:
    return " ".join(f"{tag} sentence {i} says something useful." for i in range(count))


GUIDE = f"""Preamble before any heading.

# Install

Short intro to installing.

## From source

{sentences(40, "source")}

## With pip

```bash
# this is a shell comment, not a heading
pip install atrium
```

# Usage

{sentences(3, "usage")}
"""


def test_heading_paths_and_prefix_line() -> None:
    chunks = chunk_text(GUIDE, words, max_tokens=60, overlap_tokens=0)
    paths = [chunk.heading_path for chunk in chunks]
    assert paths[0] == ""
    assert chunks[0].text == "Preamble before any heading."
    assert "Install" in paths and "Install > With pip" in paths and "Usage" in paths
    assert paths.count("Install > From source") > 1
    for chunk in chunks:
        if chunk.heading_path:
            assert chunk.text.startswith(chunk.heading_path + "\n\n")


def test_code_fence_hash_lines_are_not_headings() -> None:
    chunks = chunk_text(GUIDE, words, max_tokens=60, overlap_tokens=0)
    (pip,) = [chunk for chunk in chunks if chunk.heading_path == "Install > With pip"]
    assert "# this is a shell comment, not a heading" in pip.text
    assert body(pip).startswith("```bash") and body(pip).endswith("```")
    assert not any("shell comment" in chunk.heading_path for chunk in chunks)


def test_sections_are_never_mixed() -> None:
    for chunk in chunk_text(GUIDE, words, max_tokens=60, overlap_tokens=10):
        text = body(chunk)
        if chunk.heading_path == "Install > From source":
            assert "usage" not in text and "intro" not in text
        if chunk.heading_path == "Usage":
            assert "source sentence" not in text


@pytest.mark.parametrize("max_tokens", [16, 40, 64, 256])
@pytest.mark.parametrize("overlap_tokens", [0, 8])
def test_no_chunk_exceeds_max_tokens(max_tokens: int, overlap_tokens: int) -> None:
    text = GUIDE + "\n\n# Wall\n\n" + " ".join(f"w{i}" for i in range(700)) + "\n\n```\n" + "\n".join(
        f"line {i} = value {i}" for i in range(200)) + "\n```\n"
    chunks = chunk_text(text, subwords, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    assert chunks
    for chunk in chunks:
        assert chunk.token_count == subwords(chunk.text)
        assert chunk.token_count <= max_tokens


def test_real_tokenizer_limits_and_counts(minilm_tokens: object) -> None:
    count = minilm_tokens
    assert callable(count)
    text = GUIDE * 3 + "\n\n# Ünïcode\n\n" + "Naïve café résumé — “quotes” (parenthetical) e.g. 3.14. " * 80
    chunks = chunk_text(text, count, max_tokens=128, overlap_tokens=16)
    for chunk in chunks:
        assert chunk.token_count == count(chunk.text) <= 128


def test_nothing_is_lost_without_overlap() -> None:
    chunks = chunk_text(GUIDE, words, max_tokens=30, overlap_tokens=0)
    for section in split_sections(GUIDE):
        path = " > ".join(section.headings)
        joined = " ".join(body(chunk) for chunk in chunks if chunk.heading_path == path)
        assert joined.split() == section.body.split()


def test_long_sections_split_at_sentences_and_carry_overlap() -> None:
    chunks = [chunk for chunk in chunk_text(GUIDE, words, max_tokens=60, overlap_tokens=12)
              if chunk.heading_path == "Install > From source"]
    assert len(chunks) >= 4
    for chunk in chunks:
        assert body(chunk).endswith(".")  # cut between sentences, not inside one
    for previous, current in itertools.pairwise(chunks):
        carried = body(current).split()[:5]
        assert " ".join(carried) in body(previous)  # starts with the tail of the chunk before
        first_new = body(current).split()[0]
        assert first_new in body(previous).split()[-12:]


def test_overlap_stays_within_a_section() -> None:
    text = "# One\n\n" + sentences(30, "alpha") + "\n\n# Two\n\n" + sentences(30, "beta")
    chunks = chunk_text(text, words, max_tokens=50, overlap_tokens=10)
    first_of_two = next(chunk for chunk in chunks if chunk.heading_path == "Two")
    assert "alpha" not in first_of_two.text


def test_paragraph_boundaries_are_preferred() -> None:
    first = "First paragraph " + "alpha " * 20
    second = "Second paragraph " + "beta " * 20
    chunks = chunk_text(f"{first.strip()}.\n\n{second.strip()}.", words, max_tokens=30, overlap_tokens=0)
    assert [body(chunk).split()[0] for chunk in chunks] == ["First", "Second"]


def test_unbreakable_word_is_hard_cut() -> None:
    word = "x" * 400  # 100 "subword" tokens
    chunks = chunk_text(f"# Title\n\nbefore {word} after", subwords, max_tokens=32, overlap_tokens=0)
    assert all(chunk.token_count <= 32 for chunk in chunks)
    pieces = [token for chunk in chunks for token in body(chunk).split() if set(token) == {"x"}]
    assert len(pieces) > 1 and "".join(pieces) == word
    assert body(chunks[0]) == "before" and body(chunks[-1]).endswith(" after")


def test_heading_levels_pop_correctly() -> None:
    text = "# A\n\na text\n\n## B\n\nb text\n\n### C\n\nc text\n\n## D\n\nd text\n\n# E\n\ne text\n"
    paths = [chunk.heading_path for chunk in chunk_text(text, words)]
    assert paths == ["A", "A > B", "A > B > C", "A > D", "E"]


def test_headings_without_body_are_skipped_and_closing_hashes_dropped() -> None:
    chunks = chunk_text("# Top #\n\n## Empty\n\n## Full ##\n\ncontent", words)
    assert [(chunk.heading_path, body(chunk)) for chunk in chunks] == [("Top > Full", "content")]


def test_plain_text_mode_keeps_hash_lines() -> None:
    chunks = chunk_text("# not a heading\nplain text", words, markdown=False)
    assert len(chunks) == 1
    assert chunks[0].heading_path == ""
    assert chunks[0].text == "# not a heading\nplain text"


def test_ordinals_are_sequential() -> None:
    chunks = chunk_text(GUIDE, words, max_tokens=40, overlap_tokens=5)
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))


def test_empty_and_blank_documents() -> None:
    assert chunk_text("", words) == []
    assert chunk_text("\n\n   \n", words) == []
    assert chunk_text("# Only a heading\n", words) == []


def test_long_heading_path_is_shortened() -> None:
    long_heading = " ".join(f"h{i}" for i in range(50))
    chunks = chunk_text(f"# {long_heading}\n\nbody text here", words, max_tokens=40, overlap_tokens=0)
    assert chunks[0].heading_path == long_heading  # the metadata keeps the full path
    assert chunks[0].token_count <= 40
    assert chunks[0].text.endswith("body text here")


def test_unclosed_fence_runs_to_the_end() -> None:
    chunks = chunk_text("# Real\n\n```\ncode\n# inside\n", words)
    assert [chunk.heading_path for chunk in chunks] == ["Real"]
    assert "# inside" in chunks[0].text


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(4, 0), (64, 40), (64, -1)])
def test_invalid_sizes_are_refused(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("text", words, max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def test_code_blocks_split_at_lines() -> None:
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})" for i in range(60)) + "\n```"
    chunks = chunk_text(f"# Code\n\n{code}", words, max_tokens=40, overlap_tokens=0)
    assert len(chunks) > 1
    for chunk in chunks:
        for line in body(chunk).split("\n"):
            assert re.fullmatch(r"```(python)?|value_\d+ = compute\(\d+\)", line), line


def test_a_long_text_without_whitespace_is_cut_hard_at_the_character_bound() -> None:
    """A 2 MB run with no whitespace is one word (one token) to a word counter; the character bound still
    cuts it, and every character is kept in order."""
    text = "".join(chr(ord("a") + i % 26) for i in range(2_000_000))
    chunks = chunk_text(text, words, max_tokens=200, overlap_tokens=32, max_chars=3000)
    assert len(chunks) >= 2_000_000 // 3000
    assert max(len(chunk.text) for chunk in chunks) <= 3000
    assert "".join(chunk.text for chunk in chunks) == text


def test_the_character_bound_counts_the_heading_and_the_overlap() -> None:
    text = "# " + "Heading " * 40 + "\n\n" + " ".join(f"w{i:06d}" for i in range(5000))
    chunks = chunk_text(text, words, max_tokens=2000, overlap_tokens=100, max_chars=500)
    assert len(chunks) > 1
    assert all(len(chunk.text) <= 500 for chunk in chunks)
    # The 320-character heading is shortened to a quarter of the bound in the chunk text.
    assert all(chunk.text.startswith("Heading") for chunk in chunks)
    assert all(len(chunk.text.split("\n\n")[0]) <= 125 for chunk in chunks)
    # The overlap is carried: the second chunk starts with the tail of the first.
    first, second = (chunk.text.split("\n\n", 1)[1] for chunk in chunks[:2])
    assert second.split()[0] in first


def test_max_chars_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        chunk_text("text", words, max_chars=10)
