"""The moderation blocklist: whole words, any case, phrases across whitespace, operator patterns."""

from __future__ import annotations

import pytest

from atrium.errors import ContentBlocked
from atrium.guard.moderation import DEFAULT_BLOCKLIST, Blocklist, Moderator


def test_terms_match_whole_words_in_any_case_and_spacing() -> None:
    blocklist = Blocklist(["secret project", "zorg"])
    assert blocklist.matches("Tell me about the SECRET\n  Project now")
    assert blocklist.matches("zorg!")
    assert not blocklist.matches("zorgon and secretproject")


def test_terms_are_literal_not_patterns() -> None:
    blocklist = Blocklist(["a.b", "(x)"])
    assert blocklist.matches("see a.b here") and not blocklist.matches("see axb here")
    assert blocklist.matches("(x)")


def test_operator_patterns_are_regular_expressions() -> None:
    assert Blocklist([], [r"\bproject\s+\d{3}\b"]).matches("Project 123")


def test_the_default_list_is_on_unless_turned_off() -> None:
    moderator = Moderator()
    text = [f"where to find {DEFAULT_BLOCKLIST[0]}"]
    with pytest.raises(ContentBlocked) as refused:
        moderator.check_blocklist(text, use_default=True, terms=[], patterns=[])
    assert DEFAULT_BLOCKLIST[0] not in refused.value.message  # the guard is named, the content is not
    moderator.check_blocklist(text, use_default=False, terms=[], patterns=[])
