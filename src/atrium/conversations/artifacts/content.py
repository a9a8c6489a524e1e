"""What an artifact holds, per kind, and the checks every version passes whoever wrote it (a caller or the
model): its title, its description and its content, a JSON object whose shape depends on the kind.

=========  ===================================================================  =====================
kind       content                                                              exported as
=========  ===================================================================  =====================
markdown   ``{"text": "# Notes..."}``                                           ``text/markdown``
code       ``{"language": "python", "code": "print(1)"}``                       ``text/plain``
checklist  ``{"items": [{"text": "Book the room", "done": false}]}``            ``text/markdown``
table      ``{"columns": ["name", "qty"], "rows": [["pen", 2]]}`` (scalar cells)  ``text/csv``
json       ``{"data": <any JSON value>}``                                       ``application/json``
=========  ===================================================================  =====================

A malformed content is ``InvalidRequest`` (422) naming the first problem; one larger than
``MAX_CONTENT_BYTES`` (as compact JSON) is ``PayloadTooLarge`` (413).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from atrium.errors import InvalidRequest, PayloadTooLarge

Kind = Literal["markdown", "code", "checklist", "table", "json"]
KINDS: tuple[Kind, ...] = ("markdown", "code", "checklist", "table", "json")
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
MAX_CONTENT_BYTES = 256_000
MAX_ITEMS = 1000
MAX_COLUMNS = 100
MAX_ROWS = 10_000
MAX_CELL_CHARS = 10_000

Cell = StrictStr | StrictInt | StrictFloat | StrictBool | None


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MarkdownContent(_Content):
    text: str = Field(min_length=1)


class CodeContent(_Content):
    language: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+#._-]{0,39}$")
    code: str = Field(min_length=1)


class ChecklistItem(_Content):
    text: str = Field(min_length=1, max_length=2000)
    done: bool = False


class ChecklistContent(_Content):
    items: list[ChecklistItem] = Field(min_length=1, max_length=MAX_ITEMS)


class TableContent(_Content):
    columns: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=MAX_COLUMNS)
    rows: list[list[Cell]] = Field(max_length=MAX_ROWS)

    @model_validator(mode="after")
    def _rectangular(self) -> TableContent:
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("column names must be unique")
        for number, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"row {number} has {len(row)} cells; the table has {len(self.columns)} columns")
            if any(isinstance(cell, str) and len(cell) > MAX_CELL_CHARS for cell in row):
                raise ValueError(f"row {number} has a cell longer than {MAX_CELL_CHARS} characters")
        return self


class JsonContent(_Content):
    data: Any


SHAPES: dict[str, type[_Content]] = {"markdown": MarkdownContent, "code": CodeContent,
                                     "checklist": ChecklistContent, "table": TableContent, "json": JsonContent}


@dataclass(frozen=True, slots=True)
class Draft:
    """A version to store: checked title, description and content."""

    title: str
    description: str
    content: dict[str, Any]


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}.")
    return cast(Kind, kind)


def check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise InvalidRequest("title must not be blank.")
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidRequest(f"title is longer than {MAX_TITLE_CHARS} characters.")
    return title


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidRequest(f"description is longer than {MAX_DESCRIPTION_CHARS} characters.")
    return description.strip()


def check_content(kind: str, content: Any) -> dict[str, Any]:
    """``content`` checked against ``kind``'s shape, as it is stored (defaults filled in)."""
    shape = SHAPES[check_kind(kind)]
    if not isinstance(content, dict):
        raise InvalidRequest(f"content must be a JSON object (for a {kind}: {_EXAMPLE_TEXT[kind]}).")
    try:
        size = len(json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError):
        raise InvalidRequest("content must be plain JSON (no NaN or infinity).") from None
    if size > MAX_CONTENT_BYTES:
        raise PayloadTooLarge(f"content is {size} bytes as JSON; the limit is {MAX_CONTENT_BYTES}.")
    try:
        checked = shape.model_validate(content)
    except ValidationError as exc:
        raise InvalidRequest(f"content is not a valid {kind}: {_first_problem(exc)}") from None
    return checked.model_dump(mode="json")


def draft(kind: str, title: str, description: str, content: Any) -> Draft:
    return Draft(check_title(title), check_description(description), check_content(kind, content))


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


# --- Reading an artifact as text ----------------------------------------------------------------------------

def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    # A spreadsheet would run a cell starting like a formula: keep it text (OWASP "CSV injection").
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table_csv(content: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_csv_cell(column) for column in content["columns"]])
    writer.writerows([[_csv_cell(cell) for cell in row] for row in content["rows"]])
    return out.getvalue()


def body_text(kind: str, content: dict[str, Any]) -> str:
    """The content as the text a person would read (and the export's body)."""
    if kind == "markdown":
        return str(content["text"])
    if kind == "code":
        return str(content["code"])
    if kind == "checklist":
        return "".join(f"- [{'x' if item['done'] else ' '}] {item['text']}\n" for item in content["items"])
    if kind == "table":
        return table_csv(content)
    return json.dumps(content["data"], ensure_ascii=False, indent=2) + "\n"


EXPORT_TYPES: dict[str, tuple[str, str]] = {  # kind -> (media type, file extension)
    "markdown": ("text/markdown", "md"), "code": ("text/plain", "txt"), "checklist": ("text/markdown", "md"),
    "table": ("text/csv", "csv"), "json": ("application/json", "json"),
}


def searchable_text(kind: str, title: str, description: str, content: dict[str, Any]) -> str:
    """What the search index holds for a version: title, description and body (code with its language)."""
    body = body_text(kind, content)
    if kind == "code":
        body = f"```{content['language']}\n{body}\n```"
    return "\n\n".join(part for part in (f"# {title}", description, body) if part.strip())


# --- Examples (the generation prompt shows the model one; ``content`` errors name one) ------------------------

EXAMPLES: dict[str, dict[str, Any]] = {
    "markdown": {"kind": "markdown", "title": "Onboarding notes", "description": "What a new hire reads first.",
                 "content": {"text": "# Onboarding\n\n- Get a laptop\n- Meet the team"}},
    "code": {"kind": "code", "title": "Fibonacci", "description": "The n-th Fibonacci number in Python.",
             "content": {"language": "python",
                         "code": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
                                 "    return a\n"}},
    "checklist": {"kind": "checklist", "title": "Release checklist", "description": "Before each release.",
                  "content": {"items": [{"text": "Run the tests", "done": False},
                                        {"text": "Write the changelog", "done": False}]}},
    "table": {"kind": "table", "title": "Team", "description": "Who does what.",
              "content": {"columns": ["name", "role"], "rows": [["Ada", "engineer"], ["Grace", "manager"]]}},
    "json": {"kind": "json", "title": "Feature flags", "description": "The flags of the web app.",
             "content": {"data": {"dark_mode": True, "beta": ["search"]}}},
}
_EXAMPLE_TEXT = {kind: json.dumps(example["content"]) for kind, example in EXAMPLES.items()}
