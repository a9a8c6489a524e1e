"""Typed artifacts from a model reply: the request's kind guessed by rule, the reply read strictly.

The model is asked for one JSON object ``{"kind", "title", "description", "content", "language"}``. The
parser accepts it only when the content fits its kind: Markdown text, code with its language, a checklist
(one item per line, or a list), a table (CSV with a header and rows of equal width, or a list of rows), or
JSON (text that parses, or any JSON value). ``parse_artifact`` says why it refused, so the graph can ask
once more with the reason; after that the safe default is a Markdown artifact of what the model wrote.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from atrium.agents.calls import json_object
from atrium.agents.ports import ARTIFACT_KINDS, ArtifactDraft, ArtifactKind
from atrium.gateway.ports import ChatMessage

MAX_TITLE = 120
MAX_DESCRIPTION = 300
MAX_CONTENT = 20_000

_KIND_CUES: tuple[tuple[ArtifactKind, re.Pattern[str]], ...] = (
    ("checklist", re.compile(r"\b(checklist|check list|to-?do list)\b", re.IGNORECASE)),
    ("table", re.compile(r"\b(table|csv|spreadsheet)\b", re.IGNORECASE)),
    ("json", re.compile(r"\bjson\b", re.IGNORECASE)),
    ("code", re.compile(r"\b(code|script|function|class|snippet|program|sql|python|javascript|typescript|bash)\b",
                        re.IGNORECASE)),
)
_FENCED = re.compile(r"^\s*```[\w+-]*\n(.*?)\n?```\s*$", re.DOTALL)
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])?\s*(?:\[[ xX]?\])?\s*")

ARTIFACT_PROMPT = (
    "You write artifacts. Reply with only a JSON object with the keys kind, title, description, content "
    "and language. kind is one of markdown, code, checklist, table, json. content is a string: Markdown "
    "text; the code itself (then language names it, like python); one checklist item per line; CSV with a "
    "header row; or JSON text. Use the numbered sources when they are relevant.\n"
    "Example: {\"kind\": \"checklist\", \"title\": \"Release checklist\", \"description\": \"Steps before a "
    "release\", \"content\": \"Run the tests\\nTag the version\", \"language\": null}"
)


def kind_hint(message: str) -> ArtifactKind | None:
    """The kind the message asks for, when it says so."""
    return next((kind for kind, cue in _KIND_CUES if cue.search(message)), None)


def artifact_messages(request: str, hint: ArtifactKind | None, context: str,
                      problem: str = "") -> tuple[ChatMessage, ...]:
    asked = f"\nThe kind must be {hint}." if hint else ""
    retry = (f"\nYour previous reply was refused: {problem}. Reply with the corrected JSON object only."
             if problem else "")
    sources = f"Sources:\n{context}\n\n" if context else ""
    return (ChatMessage("system", ARTIFACT_PROMPT), ChatMessage("user", f"{sources}Request: {request}{asked}{retry}"))


def parse_artifact(reply: str, hint: ArtifactKind | None) -> ArtifactDraft | str:
    """The artifact the reply describes, or the reason it is refused."""
    value = json_object(reply)
    if value is None:
        return "the reply is not a JSON object"
    kind = value.get("kind")
    if kind not in ARTIFACT_KINDS:
        return f"kind must be one of {', '.join(ARTIFACT_KINDS)}"
    if hint is not None and kind != hint:
        return f"kind must be {hint}"
    title = value.get("title")
    if not isinstance(title, str) or not title.strip():
        return "title must be a non-empty string"
    description = value.get("description") or ""
    if not isinstance(description, str):
        return "description must be a string"
    content = _content(kind, value.get("content"), value.get("language"))
    if isinstance(content, str):
        return content
    text, language = content
    return ArtifactDraft(kind=kind, title=title.strip()[:MAX_TITLE], description=description.strip()[:MAX_DESCRIPTION],
                         content=text[:MAX_CONTENT], language=language)


def fallback_artifact(reply: str, request: str) -> ArtifactDraft | None:
    """The safe default: what the model wrote, kept as Markdown (None when it wrote nothing)."""
    text = reply.strip()
    if not text:
        return None
    return ArtifactDraft(kind="markdown", title=request.strip()[:MAX_TITLE] or "Untitled", description="",
                         content=text[:MAX_CONTENT])


def _content(kind: str, content: Any, language: Any) -> tuple[str, str | None] | str:
    """``(text, language)`` in the kind's canonical form, or the reason it does not fit."""
    if kind == "checklist":
        items = content if isinstance(content, list) else str(content or "").splitlines()
        cleaned = [_ITEM.sub("", str(item)).strip() for item in items]
        cleaned = [item for item in cleaned if item]
        return ("\n".join(f"- [ ] {item}" for item in cleaned), None) if cleaned else "a checklist needs items"
    if kind == "table":
        return _table(content)
    if kind == "json":
        if isinstance(content, str):
            try:
                content = json.loads(_unfenced(content))
            except ValueError:
                return "content is not valid JSON"
        return json.dumps(content, indent=2, ensure_ascii=False), None
    if not isinstance(content, str) or not content.strip():
        return "content must be a non-empty string"
    if kind == "code":
        if not isinstance(language, str) or not re.fullmatch(r"[\w+#.-]{1,30}", language.strip()):
            return "code needs its language"
        return _unfenced(content), language.strip().lower()
    return content.strip(), None


def _table(content: Any) -> tuple[str, str | None] | str:
    if isinstance(content, list):
        rows = [[str(cell) for cell in row] for row in content if isinstance(row, list)]
    elif isinstance(content, str):
        rows = [row for row in csv.reader(io.StringIO(_unfenced(content))) if row]
    else:
        return "a table is CSV text or a list of rows"
    if len(rows) < 2 or any(len(row) != len(rows[0]) for row in rows):
        return "a table needs a header row and rows of the same number of columns"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().rstrip("\n"), None


def _unfenced(text: str) -> str:
    match = _FENCED.match(text)
    return (match.group(1) if match else text).strip()
