"""What the assistant graph's tests share: a real knowledge base on a migrated SQLite file (hash embedder,
in-memory HNSW index, FTS5), the graph over it with a chosen chat model and LangGraph's SQLite saver, and
a run that collects the custom stream."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from sqlalchemy import insert

from atrium.accounts.principal import Principal
from atrium.agents.context import AssistantDeps, AssistantSettings
from atrium.agents.graph import build_assistant_graph
from atrium.agents.memory import InMemoryArtifactSink, InMemoryProjectRecords
from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ToolCallDelta, Usage
from atrium.gateway.providers.fake import FakeChatModel, grounded_answer
from atrium.guard.pipeline import GuardPipeline
from atrium.knowledge.answering import GroundedAnswerer
from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.keyword import SqliteKeywordSearch
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Collection, Organization, new_id, utcnow

ORG = "org-a"
MEMBER = Principal(ORG, "u-member", "member")
OTHER = Principal(ORG, "u-other", "member")
VIEWER = Principal(ORG, "u-viewer", "viewer")
OUTSIDER = Principal("org-b", "u-b", "owner")

DOCS = {
    "refunds.md": "# Refunds\n\nRefunds take up to 14 days. The money goes back to the original card.",
    "invoices.md": "# Invoices\n\nInvoices are emailed on the first day of every month as PDF files.",
}
SECRET = "Project Falcon launches on the ninth of March with the orbital payload."
SECRET_COLLECTION = "secret-plans"
MIN_RELEVANCE = 0.15


@dataclass
class World:
    db: Database
    knowledge: KnowledgeService
    answerer: GroundedAnswerer
    artifacts: InMemoryArtifactSink = field(default_factory=InMemoryArtifactSink)
    projects: InMemoryProjectRecords = field(default_factory=InMemoryProjectRecords)


@contextlib.asynccontextmanager
async def knowledge_world(directory: Path) -> AsyncIterator[World]:
    """Two org-wide documents and one in a collection private to ``OTHER``."""
    url = f"sqlite+aiosqlite:///{directory / 'atrium.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    async with db.system_session() as session:
        session.add_all([Organization(id=ORG, name="a"), Organization(id="org-b", name="b")])
        await session.flush()
        await session.execute(insert(Collection).values(
            id=new_id(), org_id=ORG, name=SECRET_COLLECTION, visibility="private", writers="owner",
            user_id=OTHER.user_id, created_at=utcnow()))
    embedder = HashEmbedder(dimensions=1024)
    knowledge = KnowledgeService(db, embedder, HnswVectorIndex(None, embedder.dimensions), SqliteKeywordSearch(),
                                 KnowledgeSettings(min_relevance=MIN_RELEVANCE))
    for source, text in DOCS.items():
        await knowledge.ingest_text(ORG, "docs", source, text, title=source.removesuffix(".md").title())
    await knowledge.ingest_text(ORG, SECRET_COLLECTION, "falcon.md", SECRET, title="Falcon")
    answerer = GroundedAnswerer(knowledge, top_k=3, min_relevance=MIN_RELEVANCE)
    try:
        yield World(db, knowledge, answerer)
    finally:
        await db.dispose()


def assistant(world: World, model: ChatModel, checkpointer: BaseCheckpointSaver[Any] | None, *,
              native_tools: bool = False, guard: GuardPipeline | None = None) -> Any:
    deps = AssistantDeps(answerer=world.answerer, model=model, artifacts=world.artifacts, projects=world.projects,
                         guard=guard, settings=AssistantSettings(native_tools=native_tools))
    return build_assistant_graph(deps, checkpointer)


@contextlib.asynccontextmanager
async def sqlite_saver(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        yield saver


@dataclass
class Turn:
    state: dict[str, Any]
    custom: list[dict[str, Any]]
    updates: list[dict[str, Any]]

    @property
    def steps(self) -> list[str]:
        return [event["node"] for event in self.custom if event["type"] == "step"]

    @property
    def streamed(self) -> str:
        """The answer as a client following the tokens shows it (a discarded draft cleared)."""
        text = ""
        for event in self.custom:
            if event["type"] == "discard":
                text = ""
            elif event["type"] == "token":
                text += event["text"]
        return text


async def turn(graph: Any, message: str, principal: Principal | None = MEMBER, thread: str = "t1",
               **state: Any) -> Turn:
    configurable: dict[str, Any] = {"thread_id": thread}
    if principal is not None:
        configurable["principal"] = principal
    custom, updates, values = [], [], {}
    async for mode, chunk in graph.astream({"messages": [{"role": "user", "content": message}], **state},
                                           {"configurable": configurable},
                                           stream_mode=["custom", "values", "updates"]):
        if mode == "custom":
            custom.append(chunk)
        elif mode == "updates":
            updates.append(chunk)
        else:
            values = chunk
    return Turn(values, custom, updates)


_SOURCE_LINE = re.compile(r"^\[(\d+)\][^\n]*\n([^\n]*)", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def last_source_answer(request: ChatRequest) -> str:
    """Answers from the highest-numbered source of the prompt (the last user message that lists sources):
    its first sentence and its [n]."""
    found = next((matches for message in reversed(request.messages) if message.role == "user"
                  for matches in [_SOURCE_LINE.findall(message.text)] if matches), None)
    if not found:
        return grounded_answer(request)
    number, text = max(found, key=lambda item: int(item[0]))
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return f"{first} [{number}]"


def task_of(request: ChatRequest) -> str:
    return request.context.task


def scripted(**by_task: Callable[[ChatRequest], str] | str) -> FakeChatModel:
    """A FakeChatModel whose answer depends on the request's task (``qa``, ``classify``, ``artifact``,
    ``chat``); tasks not given answer with the fake's grounded rule."""

    def answer(request: ChatRequest) -> str:
        rule = by_task.get(request.context.task)
        if rule is None:
            return grounded_answer(request)
        return rule if isinstance(rule, str) else rule(request)

    return FakeChatModel(answer=answer)


class ToolCallingModel:
    """A ChatModel adapter that calls tools natively, as OpenAI-format providers do: offered tools and not
    yet given a tool result, it streams ``call`` (name, JSON arguments) as ``ToolCallDelta`` pieces;
    afterwards it answers from the last source of the prompt, through ``FakeChatModel``."""

    name = "tool-caller"

    def __init__(self, call: tuple[str, str]) -> None:
        self.call = call
        self.text = FakeChatModel(self.name, answer=last_source_answer)
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.requests.append(request)
        if request.tools and not any(message.role == "tool" for message in request.messages):
            name, arguments = self.call
            yield ToolCallDelta(index=0, id="call_1", name=name)
            middle = len(arguments) // 2
            yield ToolCallDelta(index=0, arguments=arguments[:middle])
            yield ToolCallDelta(index=0, arguments=arguments[middle:])
            yield Usage(prompt_tokens=10, completion_tokens=5)
            yield Done(model=self.name, finish_reason="tool_calls")
            return
        async for event in self.text.stream(request):
            yield event

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def all_prompts(requests: list[ChatRequest]) -> str:
    return "\n".join(message.text for request in requests for message in request.messages)

