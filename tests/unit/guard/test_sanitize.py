"""The answer sanitiser: raw HTML neutralised and links validated outside code, code samples untouched,
and the same result however the answer is cut into streamed pieces.

The judge is a real renderer: markdown-it (CommonMark) with raw HTML on and every link allowed, whose
HTML output must hold only Markdown's own tags and only http/https/mailto destinations."""

from __future__ import annotations

import random
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from atrium.guard.sanitize import MarkdownSanitizer

MARKDOWN_TAGS = {"p", "em", "strong", "code", "pre", "a", "img", "ul", "ol", "li", "blockquote", "h1", "h2", "h3",
                 "h4", "h5", "h6", "hr", "br"}
SAFE_ATTRIBUTES = {("a", "href"), ("a", "title"), ("img", "src"), ("img", "alt"), ("img", "title"),
                   ("code", "class"), ("ol", "start")}


def sanitize_markdown(text: str, allowed_domains: list[str] | None = None) -> str:
    """The whole text at once through the streaming sanitiser."""
    sanitizer = MarkdownSanitizer(allowed_domains)
    return sanitizer.feed(text) + sanitizer.finish()


class _Unsafe(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in MARKDOWN_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if (tag, name) not in SAFE_ATTRIBUTES:
                self.found.append(f"{tag}[{name}]")
            elif name in ("href", "src") and not (value or "").lower().startswith(("http://", "https://", "mailto:")):
                self.found.append(f"{tag}[{name}={value}]")

    handle_startendtag = handle_starttag


def unsafe(markdown: str) -> list[str]:
    """What a permissive renderer would turn into live HTML or an unchecked link."""
    renderer = MarkdownIt("commonmark", {"html": True})
    renderer.validateLink = lambda url: True  # type: ignore[method-assign]
    checker = _Unsafe()
    checker.feed(renderer.render(markdown))
    return checker.found


def streamed(text: str, seed: int, allowed: list[str] | None = None) -> str:
    rng = random.Random(seed)
    sanitizer = MarkdownSanitizer(allowed)
    out, i = [], 0
    while i < len(text):
        step = rng.randint(1, 6)
        out.append(sanitizer.feed(text[i:i + step]))
        i += step
    return "".join(out) + sanitizer.finish()


CASES = {
    "Hello <script>alert(1)</script> world": "Hello &lt;script>alert(1)&lt;/script> world",
    "<img src=x onerror=alert(1)>": "&lt;img src=x onerror=alert(1)>",
    "<a href='javascript:alert(1)'>x</a>": "&lt;a href='javascript:alert(1)'>x&lt;/a>",
    "Click [here](javascript:alert(1)) or [there](https://example.com).":
        "Click here or [there](https://example.com).",
    "![x](javascript:alert(1)) ![ok](https://img.example/a.png)": "x ![ok](https://img.example/a.png)",
    "[a](jav&#x61;script:alert(1)) [c](<javascript:y>) [d]( javascript:z) [e](data:text/html,x)": "a c d e",
    "[x](vbscript:msgbox) [y](file:///etc/passwd) [z](mailto:a@b.example)": "x y [z](mailto:a@b.example)",
    "[![badge](https://b.example/x.svg)](javascript:alert(1))": "![badge](https://b.example/x.svg)",
    "[ref]: javascript:alert(1)\n\nSee [ref].": "\\[ref]: javascript:alert(1)\n\nSee [ref].",
    "[multi\nline](javascript:alert(1))": "[multi\nline]\\(javascript:alert(1))",
    "<!-- hidden --> <https://example.com> <javascript:alert(1)>":
        "&lt;!-- hidden --> &lt;https://example.com> &lt;javascript:alert(1)>",
    "a ` b\nc ` <script>alert(1)</script> `": "a ` b\nc ` &lt;script>alert(1)&lt;/script> `",
    "- item\n  ```\n  code\n- next <b>x</b>": "- item\n  ```\n  code\n- next &lt;b>x&lt;/b>",
}


@pytest.mark.parametrize(("raw", "expected"), CASES.items())
def test_html_is_neutralised_and_bad_links_become_text(raw: str, expected: str) -> None:
    assert unsafe(raw), "the case must be dangerous as written"
    assert sanitize_markdown(raw) == expected
    assert unsafe(expected) == []


@pytest.mark.parametrize("text", [
    "Use `<div class=\"x\">` or ``a ` <b> `` inline.",
    "```html\n<script>alert('kept as code')</script>\n<b>bold</b>\n```\nafter",
    "~~~\n<i>tilde fence</i>\n~~~",
    "Refunds take 14 days [1]. See [2] and [EMAIL_1].",
    "[ok]: https://example.com \"Title\"\n\nSee [ok].",
    "> quote & AT&T: 3 < 4 > 2, **bold** and _em_, \\<escaped>",
    "[docs](https://docs.example/a_(b) \"Docs\") and <br> gone? no: 1 <2",
])
def test_markdown_and_code_samples_are_kept(text: str) -> None:
    cleaned = sanitize_markdown(text)
    assert unsafe(cleaned) == []
    if "<br>" not in text:
        assert cleaned == text


def test_the_domain_allowlist_applies_to_http_links_and_images() -> None:
    text = "[a](https://docs.example.com/x) [b](https://evil.example/x) ![c](http://cdn.docs.example.com/i.png) " \
           "[d](mailto:help@anywhere.example)"
    assert sanitize_markdown(text, ["docs.example.com"]) == (
        "[a](https://docs.example.com/x) b ![c](http://cdn.docs.example.com/i.png) [d](mailto:help@anywhere.example)")


@pytest.mark.parametrize("raw", [*CASES, "Answer with [a link](https://ok.example/p) and `code <b>` [1]."])
def test_streaming_gives_exactly_the_whole_result_wherever_the_text_is_cut(raw: str) -> None:
    whole = sanitize_markdown(raw)
    for seed in range(40):
        assert streamed(raw, seed) == whole


def test_a_link_is_held_back_until_it_is_complete() -> None:
    sanitizer = MarkdownSanitizer()
    assert sanitizer.feed("Read [this](java") == "Read "
    assert sanitizer.feed("script:alert(1)) now") == "this now"
    assert sanitizer.finish() == ""


def test_random_markdown_never_renders_live_html_or_unchecked_links() -> None:
    pieces = ["[", "]", "(", ")", "![", "`", "``", "```", "~~~", "\n", "\n\n", "\r", "\r\n", " ", "<", "<script>",
              "</a>", "<a href=x>", "javascript:alert(1)", "https://ok.example/p", "a", "\\", "\"", ":", "- ",
              "> ", "1. ", "&#x6a;", "data:x", "<javascript:x>", "<!--", "[x]:", "](", "](<", "mailto:a@b.c"]
    for seed in range(3000):
        rng = random.Random(seed)
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        cleaned = sanitize_markdown(text)
        assert unsafe(cleaned) == [], (seed, text, cleaned)
        assert streamed(text, seed) == cleaned, (seed, text)
