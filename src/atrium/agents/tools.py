"""The assistant's server-side tools, run on behalf of the caller's principal and never more.

``search_knowledge`` searches only the collections the principal may read (``KnowledgeService``'s
``search_readable``); ``read_artifact`` and ``create_project`` go through the ``ArtifactSink`` and
``ProjectRecords`` ports, which decide from the principal. What a tool returns enters the prompt as
numbered sources, after the guard's *context* stage, so the answer can cite it and validation can hold the
answer against it; a refusal is a short note, never the refused content.

Models with tool calling get ``TOOL_SPECS`` (OpenAI function tools) on the answer call. Models without it
(the fake, the bundled local model) get one structured-output call first (``PLAN_PROMPT``), read by
``parse_plan``; anything it cannot read means no tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atrium.accounts.principal import Principal
from atrium.agents.calls import json_object
from atrium.agents.ports import ArtifactSink, ProjectRecords
from atrium.agents.state import MAX_TOOL_RESULT_CHARS, clip, hit_source
from atrium.errors import AppError
from atrium.gateway.ports import ToolCall
from atrium.knowledge.answering import SNIPPET_CHARS, Source
from atrium.knowledge.service import KnowledgeService

if TYPE_CHECKING:
    from atrium.guard.pipeline import Admitted

# name -> (description, {argument: (description, required)})
TOOLS: dict[str, tuple[str, dict[str, tuple[str, bool]]]] = {
    "search_knowledge": ("Search the knowledge base for passages about a query.",
                         {"query": ("what to search for", True),
                          "collection": ("a collection name, to search only it", False)}),
    "read_artifact": ("Read an artifact (a generated document, code, checklist, table or JSON) by its id.",
                      {"artifact_id": ("the artifact's id, like art_12", True)}),
    "create_project": ("Create a project record.",
                       {"title": ("the project's title, at most 100 characters", True),
                        "description": ("what the project is about", True)}),
}
TOOL_SPECS: tuple[dict[str, Any], ...] = tuple(
    {"type": "function",
     "function": {"name": name, "description": description,
                  "parameters": {"type": "object",
                                 "properties": {arg: {"type": "string", "description": text}
                                                for arg, (text, _) in arguments.items()},
                                 "required": [arg for arg, (_, required) in arguments.items() if required]}}}
    for name, (description, arguments) in TOOLS.items())
MAX_ARGUMENT_CHARS = 500
SEARCH_LIMIT = 3

PLAN_PROMPT = (
    "You can use one tool before the question is answered. Tools:\n"
    + "".join(f"- {name} {json.dumps({arg: text for arg, (text, _) in arguments.items()})}: {description}\n"
              for name, (description, arguments) in TOOLS.items())
    + "Reply with only a JSON object: {\"tool\": \"<name>\", \"arguments\": {...}}, or {\"tool\": \"none\"} "
    "when no tool is needed.\n"
    "Example: Message: Show me artifact art_3\n{\"tool\": \"read_artifact\", \"arguments\": {\"artifact_id\": "
    "\"art_3\"}}"
)
# Only messages that name what a tool does get the extra planning call (the local model pays for each call).
_TOOL_CUES = re.compile(r"\b(art_\w+|artifact|project|search|look up|look for|find)\b", re.IGNORECASE)


def wants_tool(message: str) -> bool:
    return bool(_TOOL_CUES.search(message))


def checked_arguments(name: str, arguments: str | Mapping[str, Any]) -> dict[str, str] | None:
    """The call's arguments when ``name`` is a tool and they fit its schema (required ones present, all
    strings, not too long); None otherwise. Unknown arguments are dropped."""
    spec = TOOLS.get(name)
    if spec is None:
        return None
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError:
            return None
        arguments = parsed if isinstance(parsed, dict) else {}
    out: dict[str, str] = {}
    for arg, (_, required) in spec[1].items():
        value = arguments.get(arg)
        if value is None or value == "":
            if required:
                return None
            continue
        if not isinstance(value, str) or len(value) > MAX_ARGUMENT_CHARS:
            return None
        out[arg] = value.strip()
    return out


def parse_plan(reply: str) -> ToolCall | None:
    """The one tool call a planning reply asks for, strictly checked; None for "none" or anything else."""
    value = json_object(reply)
    if value is None or not isinstance(value.get("tool"), str):
        return None
    arguments = value.get("arguments", {})
    checked = checked_arguments(value["tool"], arguments if isinstance(arguments, dict) else {})
    if checked is None:
        return None
    return ToolCall(id="plan_1", name=value["tool"], arguments=json.dumps(checked))


@dataclass(slots=True)
class ToolResult:
    """What a tool gave: ``note`` (for the log and the model), new numbered ``sources`` with the texts the
    model is shown (``passages``)."""

    ok: bool
    note: str
    sources: list[Source] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)

    def for_model(self) -> str:
        listed = "".join(f"\n[{source.number}] {source.title}\n{text}"
                         for source, text in zip(self.sources, self.passages, strict=True))
        return f"{self.note}{listed}"


class ToolBox:
    """Runs the tools for one principal; new sources are numbered after the ``first_number - 1`` there are."""

    def __init__(self, knowledge: KnowledgeService, artifacts: ArtifactSink, projects: ProjectRecords,
                 principal: Principal, guard: Admitted | None) -> None:
        self.knowledge = knowledge
        self.artifacts = artifacts
        self.projects = projects
        self.principal = principal
        self.guard = guard

    async def run(self, call: ToolCall, first_number: int) -> ToolResult:
        arguments = checked_arguments(call.name, call.arguments)
        if arguments is None:
            return ToolResult(False, f"The call to {call.name!r} was not understood; no tool ran.")
        try:
            if call.name == "search_knowledge":
                return await self._search(arguments, first_number)
            if call.name == "read_artifact":
                return await self._read_artifact(arguments["artifact_id"], first_number)
            return await self._create_project(arguments["title"], arguments["description"], first_number)
        except AppError as exc:  # refused or invalid: the model is told why, the caller's rights stand
            return ToolResult(False, f"{call.name} refused: {exc.message}")

    async def _search(self, arguments: Mapping[str, str], first: int) -> ToolResult:
        hits = await self.knowledge.search_readable(self.principal, arguments["query"], mode="hybrid",
                                                    limit=SEARCH_LIMIT, collection=arguments.get("collection"))
        if not hits:
            return ToolResult(True, "search_knowledge found nothing.")
        texts, shown = self._guarded([hit.chunk.text for hit in hits])
        sources = [hit_source(first + i, hit, snippet, arguments["query"])
                   for i, (hit, snippet) in enumerate(zip(hits, shown, strict=True))]
        return ToolResult(True, f"search_knowledge found {len(hits)} passage(s):", sources, texts)

    async def _read_artifact(self, artifact_id: str, first: int) -> ToolResult:
        artifact = await self.artifacts.read(self.principal, artifact_id)
        if artifact is None:
            return ToolResult(False, f"read_artifact: there is no artifact {artifact_id!r} you may read.")
        [text], [shown] = self._guarded([artifact.content])
        source = Source(number=first, chunk_id=0, document_id=artifact.id, collection="artifacts",
                        source=f"artifact:{artifact.id}", title=artifact.title, heading=artifact.kind,
                        snippet=shown[:SNIPPET_CHARS], score=1.0)
        return ToolResult(True, f"read_artifact {artifact.id}:", [source], [text])

    async def _create_project(self, title: str, description: str, first: int) -> ToolResult:
        record = await self.projects.create(self.principal, title, description)
        text = f"Project {record.title!r} was created with id {record.id}."
        source = Source(number=first, chunk_id=0, document_id=record.id, collection="projects",
                        source=f"project:{record.id}", title=record.title, heading="project record",
                        snippet=text, score=1.0)
        return ToolResult(True, "create_project done:", [source], [text])

    def _guarded(self, texts: Sequence[str]) -> tuple[list[str], list[str]]:
        """The context stage on what a tool read, as on retrieved chunks: what the model is shown
        (clipped for the state) and what its source shows."""
        if self.guard is None:
            return [clip(text, MAX_TOOL_RESULT_CHARS) for text in texts], list(texts)
        passages = self.guard.context(texts)
        return [clip(p.prompt, MAX_TOOL_RESULT_CHARS) for p in passages], [p.shown for p in passages]
