"""Answers made safe to render: Markdown kept, raw HTML neutralised, links and images validated.

Answers are Markdown, and clients render them, often with a renderer that passes raw HTML through. So,
outside code:

* every ``<`` that could open an HTML tag, comment or autolink (``<`` followed by a letter, ``/``, ``!``
  or ``?``) becomes ``&lt;``: the text still reads ``<script>`` once rendered, but no tag is ever formed.
  Code spans and fenced code blocks are left exactly as written (renderers escape them), so code samples
  survive;
* links and images (inline ``[t](url)``, ``![a](url)``, reference definitions ``[r]: url``) keep only
  ``http``, ``https`` and ``mailto`` destinations (after undoing entities, backslash escapes and
  control characters, as a browser would); with a domain allowlist, ``http(s)`` hosts must be on it. A
  link that fails becomes its plain text, an image its alt text; a ``](`` or ``]:`` left over from a
  construct cut across lines is backslash-escaped so it cannot form a link.

nh3 is not applied to the Markdown itself: it serialises HTML, so it would rewrite Markdown (``> quote``
becomes ``&gt; quote``, ``&`` becomes ``&amp;``) and drop the text of code samples.

The sanitiser streams: ``feed`` returns the part of the text that is safe to send now and holds back a
construct that is not finished yet (a link whose ``)`` has not arrived, an open code span, the first
characters of a line that may open a code fence). The concatenation of what it returns is exactly the
sanitised whole text, so a streamed answer and the stored one are the same.

Conservative on purpose where its view of the Markdown may differ from a renderer's: fences only count
at column 0 (inside a list item a renderer may close one that this sanitiser would think still open), and
after a line that leaves a code span open, code spans are not trusted again until a blank line. The cost
of these choices is cosmetic (a ``&lt;`` shown inside some code), never a live tag or link.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
HOLD_LIMIT = 1000  # a construct still open after this many characters is taken as plain text

_SPECIAL = re.compile(r"[`<\[\]!\\]")
_TAG_START = re.compile(r"[A-Za-z/!?]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# What may precede a reference definition's "[" on its line: indentation and container markers (block
# quotes, list items), which renderers accept there.
_DEFINITION = re.compile(r"[ \t>*+\-0-9.)]*\[")
_SAFE_TITLE = re.compile(r"[ \t]+(?:\"[^\"\\\[\]()<>`]*\"|'[^'\\\[\]()<>`]*')[ \t]*")
_OPEN_BRACKET = re.compile(r"(?<!\\)\[")
_BLANK = re.compile(r"^[ \t]*$")
_LINE_END = re.compile(r"\r\n|\r|\n")  # what CommonMark counts as a line ending


class LinkPolicy:
    """Which destinations a link or image may have."""

    def __init__(self, allowed_domains: Sequence[str] | None = None) -> None:
        self.domains = tuple(d.lower().lstrip(".") for d in allowed_domains) if allowed_domains else None

    def allows(self, destination: str) -> bool:
        url = _CONTROL.sub("", html.unescape(_BACKSLASH_ESCAPE.sub(r"\1", destination)))
        if url.startswith("<") and url.endswith(">"):
            url = url[1:-1]
        match = _SCHEME.match(url)
        if match is None or match.group(1).lower() not in ALLOWED_SCHEMES:
            return False
        scheme = match.group(1).lower()
        if scheme == "mailto":
            return True
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError:
            return False
        if not host:
            return False
        return self.domains is None or any(host == d or host.endswith("." + d) for d in self.domains)


def _tick_run(s: str, i: int) -> int:
    end = i
    while end < len(s) and s[end] == "`":
        end += 1
    return end - i


def _closing_ticks(s: str, start: int, run: int) -> int | None:
    """The end of the backtick run of exactly ``run`` that closes a code span opened before ``start``."""
    i = start
    while True:
        i = s.find("`", i)
        if i < 0:
            return None
        length = _tick_run(s, i)
        if length == run:
            return i + length
        i += length


class _Incomplete(Exception):
    """The construct needs more text than has arrived."""


class MarkdownSanitizer:
    """Streaming sanitiser: ``feed(piece)`` returns safe text to emit now, ``finish()`` the rest."""

    def __init__(self, allowed_domains: Sequence[str] | None = None) -> None:
        self.links = LinkPolicy(allowed_domains)
        self._line = ""  # the current line so far (no newline)
        self._done = 0  # how much of it has been emitted
        self._mode: str | None = None  # prose | code | fence, or None while undecided
        self._fence: tuple[str, int] | None = None  # inside a fenced block: its character and length
        self._spans_trusted = True  # False after a line left a code span open, until a blank line
        self._after_cr = False

    def feed(self, text: str) -> str:
        out: list[str] = []
        if self._after_cr and text.startswith("\n"):  # the "\n" of a "\r\n" cut across two pieces
            out.append("\n")
            text = text[1:]
        self._after_cr = False
        while text:
            end = _LINE_END.search(text)
            if end is None:
                self._line += text
                out.append(self._advance(complete=False))
                break
            self._line += text[:end.start()]
            text = text[end.end():]
            out.append(self._advance(complete=True))
            out.append(end.group())
            self._end_line()
            self._after_cr = end.group() == "\r" and not text
        return "".join(out)

    def finish(self) -> str:
        out = self._advance(complete=True)
        self._end_line()
        return out

    # -- lines -------------------------------------------------------------------------------------

    def _end_line(self) -> None:
        if self._mode == "fence":
            self._fence = None if self._fence is not None and self._closes(self._line) else self._opener()
        if _BLANK.match(self._line) or self._mode == "fence":
            self._spans_trusted = True
        self._line, self._done, self._mode = "", 0, None

    def _advance(self, *, complete: bool) -> str:
        if self._mode is None:
            self._mode = self._classify(complete)
            if self._mode is None:
                return ""
        line = self._line
        if self._mode == "code" or (self._mode == "fence" and complete):
            out, self._done = line[self._done:], len(line)
            return out
        if self._mode == "fence":
            return ""
        out, self._done = self._scan(line, self._done, complete=complete, top=True)
        return out

    def _classify(self, complete: bool) -> str | None:
        line = self._line
        if self._fence is not None:
            char = re.escape(self._fence[0])
            if re.fullmatch(f" {{0,3}}{char}*[ \\t\\r]*", line):
                if not complete:
                    return None
                return "fence" if self._closes(line) else "code"
            return "code"
        # A backtick fence's info string may not hold a backtick, so such a line is known only when whole.
        if not complete and (re.fullmatch(r"`*|~*", line) or line.startswith("```")):
            return None
        return "fence" if self._opener() is not None else "prose"

    def _opener(self) -> tuple[str, int] | None:
        match = re.match(r"(`{3,}|~{3,})", self._line)
        if match is None or (match.group(1)[0] == "`" and "`" in self._line[match.end():]):
            return None
        return match.group(1)[0], len(match.group(1))

    def _closes(self, line: str) -> bool:
        assert self._fence is not None
        char, length = self._fence
        match = re.fullmatch(f" {{0,3}}({re.escape(char)}+)[ \\t\\r]*", line)
        return match is not None and len(match.group(1)) >= length

    # -- inline ------------------------------------------------------------------------------------

    def _scan(self, s: str, i: int, *, complete: bool, top: bool) -> tuple[str, int]:
        """Sanitise ``s`` from ``i``; returns the output and where it stopped (before a construct that
        needs more text, unless ``complete``)."""
        out: list[str] = []
        n = len(s)
        while i < n:
            special = _SPECIAL.search(s, i)
            if special is None:
                out.append(s[i:])
                i = n
                break
            j = special.start()
            out.append(s[i:j])
            i = j
            try:
                piece, i = self._construct(s, i, complete=complete, top=top)
            except _Incomplete:
                if n - i < HOLD_LIMIT:
                    break
                piece, i = self._construct(s, i, complete=True, top=top)
            out.append(piece)
        return "".join(out), i

    def _need(self, s: str, i: int, complete: bool) -> bool:
        """Whether ``s[i]`` exists; raises ``_Incomplete`` when it may still arrive."""
        if i < len(s):
            return True
        if complete:
            return False
        raise _Incomplete

    def _construct(self, s: str, i: int, *, complete: bool, top: bool) -> tuple[str, int]:
        char = s[i]
        if char == "\\":
            if not self._need(s, i + 1, complete):
                return "\\", i + 1
            return s[i:i + 2], i + 2
        if char == "`":
            run = _tick_run(s, i)
            self._need(s, i + run, complete)  # the run itself may still grow
            close = _closing_ticks(s, i + run, run) if self._spans_trusted else None
            if close == len(s) and not complete:  # the closing run may still grow into another length
                raise _Incomplete
            if close is None:
                if not complete and self._spans_trusted:
                    raise _Incomplete
                # A renderer may close this span on a later line: trust no span until a blank line.
                self._spans_trusted = False
                return s[i:i + run], i + run
            return s[i:close], close
        if char == "<":
            if not self._need(s, i + 1, complete):
                return "<", i + 1
            return ("&lt;" if _TAG_START.match(s[i + 1]) else "<"), i + 1
        if char == "!":
            if self._need(s, i + 1, complete) and s[i + 1] == "[":
                return self._link(s, i, i + 1, complete=complete)
            return "!", i + 1
        if char == "[":
            if top and _DEFINITION.fullmatch(s[:i + 1]):
                definition = self._definition(s, i, complete=complete)
                if definition is not None:
                    return definition
            return self._link(s, i, i, complete=complete)
        return self._stray_bracket(s, i, complete=complete)

    def _link(self, s: str, start: int, bracket: int, *, complete: bool) -> tuple[str, int]:
        """``[text](dest)`` or ``![alt](dest)`` starting at ``start`` (its ``[`` at ``bracket``)."""
        image = start != bracket
        literal = ("![" if image else "["), bracket + 1
        close = self._closing_bracket(s, bracket, complete)
        if close is None:
            if not complete:
                raise _Incomplete
            return literal
        if not self._need(s, close + 1, complete) or s[close + 1] != "(":
            return literal
        parsed = _destination(s, close + 2)
        if parsed is None:
            if not complete:
                raise _Incomplete
            return literal  # the "](" is checked again when the scan reaches it
        destination, title, end = parsed
        text, _ = self._scan(s[bracket + 1:close], 0, complete=True, top=False)
        if not self.links.allows(destination):
            return text, end
        return f"{'!' if image else ''}[{text}]({_safe_destination(destination)}{_safe_title(title)})", end

    def _definition(self, s: str, i: int, *, complete: bool) -> tuple[str, int] | None:
        """A reference definition ``[label]: dest "title"`` (at the start of a line, after any container
        markers): kept when its destination is allowed (the label and title scanned like any text, in
        case a renderer reads the line as a paragraph), else its ``[`` is escaped so it defines nothing.
        ``None``: not a definition."""
        close = self._closing_bracket(s, i, complete)
        if close is None or close + 1 >= len(s):
            if not complete:
                raise _Incomplete
            return None
        if s[close + 1] != ":":
            return None
        if not complete:
            raise _Incomplete
        after = s[close + 2:]
        rest = after.lstrip(" \t")
        destination = rest.split()[0] if rest.split() else ""
        label, _ = self._scan(s[i + 1:close], 0, complete=True, top=False)
        if not destination or not self.links.allows(destination):
            return f"\\[{label}]", close + 1
        end = len(s) - len(rest) + len(destination)  # the title, if any, is scanned like any text
        return f"[{label}]:{after[:len(after) - len(rest)]}{_safe_destination(destination)}", end

    def _stray_bracket(self, s: str, i: int, *, complete: bool) -> tuple[str, int]:
        """A ``]`` whose ``[`` is elsewhere (an earlier line): followed by ``(`` or ``:`` it could still
        close a link or a definition, so it is escaped unless it ends a well-formed link to an allowed
        destination (a destination on the next line, which renderers accept, is refused)."""
        if not self._need(s, i + 1, complete) or s[i + 1] not in "(:":
            return "]", i + 1
        if s[i + 1] == ":":  # a definition label cut across lines, unless a "[" earlier here rules it out
            return ("]" if _OPEN_BRACKET.search(s, 0, i) else "\\]"), i + 1
        parsed = _destination(s, i + 2)
        if parsed is None:
            if not complete:
                raise _Incomplete
            return "]\\(", i + 2
        destination, title, end = parsed
        if not self.links.allows(destination):
            return "]\\(", i + 2
        return f"]({_safe_destination(destination)}{_safe_title(title)})", end

    def _closing_bracket(self, s: str, start: int, complete: bool) -> int | None:
        depth = 0
        i = start
        while i < len(s):
            char = s[i]
            if char == "\\":
                i += 2
                continue
            if char == "`" and self._spans_trusted:
                run = _tick_run(s, i)
                close = _closing_ticks(s, i + run, run)
                if not complete and (close is None or close == len(s)):  # its closer may still come
                    raise _Incomplete
                i = close if close is not None else i + run
                continue
            if char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
                if depth == 0:
                    return i
            i += 1
        return None


def _safe_destination(destination: str) -> str:
    """Even if a renderer read the destination as text, no tag may start in it (``&lt;`` decodes back
    to the same URL inside a link)."""
    if destination.startswith("<"):
        return destination
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", destination)


def _safe_title(title: str) -> str:
    """A title is a tooltip: kept only when plainly quoted and free of Markdown and HTML syntax."""
    return title if _SAFE_TITLE.fullmatch(title) else ""


def _destination(s: str, i: int) -> tuple[str, str, int] | None:
    """Parse ``dest "title")`` from ``s[i:]``: (destination, the title part as written, end after ``)``),
    or ``None`` when it does not (yet) form one."""
    n = len(s)
    while i < n and s[i] in " \t":
        i += 1
    start = i
    if i < n and s[i] == "<":
        close = s.find(">", i)
        if close < 0 or "<" in s[i + 1:close]:
            return None
        i = close + 1
    else:
        depth = 0
        while i < n:
            char = s[i]
            if char == "\\" and i + 1 < n:
                i += 2
                continue
            if char in " \t" or ord(char) < 0x20:
                break
            if char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            i += 1
    destination = s[start:i]
    title_start = i
    while i < n and s[i] in " \t":
        i += 1
    if i < n and s[i] in "\"'(" and i > title_start:
        closer = ")" if s[i] == "(" else s[i]
        i += 1
        while i < n and s[i] != closer:
            i += 2 if s[i] == "\\" else 1
        if i >= n:
            return None
        i += 1
        while i < n and s[i] in " \t":
            i += 1
    if i >= n or s[i] != ")":
        return None
    return destination, s[title_start:i], i + 1
