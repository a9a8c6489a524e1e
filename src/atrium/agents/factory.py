"""Wiring the assistant into a running Atrium: its collaborators from the built services, and the
checkpointer for the profile (SQLite in the embedded default, PostgreSQL in the scale profile)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.engine import make_url

from atrium.agents.graph import AssistantDeps, AssistantSettings
from atrium.agents.ports import ArtifactSink, ProjectRecords
from atrium.gateway.catalogue import Catalogue

if TYPE_CHECKING:
    from atrium.container import Services

CHECKPOINT_FILE = "checkpoints.sqlite"


def assistant_deps(services: Services, artifacts: ArtifactSink, projects: ProjectRecords) -> AssistantDeps:
    """The assistant over the same retrieval, guard pipeline and gateway stack as ``/api/v1/chat/ask``."""
    chat, settings = services.chat, services.settings
    return AssistantDeps(
        answerer=chat.answerer, model=services.gateway.chat, artifacts=artifacts, projects=projects, guard=chat.guard,
        settings=AssistantSettings(max_tokens=settings.chat.max_tokens, temperature=settings.chat.temperature,
                                   native_tools=calls_tools(services.gateway.catalogue)))


def calls_tools(catalogue: Catalogue, model: str = "") -> bool:
    """Whether the model a request names (default: the default model) declares tool calling. Models that
    declare nothing, the bundled local one and the fake among them, get the JSON stand-in."""
    entry = catalogue.entry(model or catalogue.default)
    return entry is not None and "tools" in entry.capabilities


@contextlib.asynccontextmanager
async def open_checkpointer(database_url: str, data_dir: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's own saver for the profile, set up and closed with the block: on SQLite a file of its
    own beside the database (its writer never waits behind the application's), on PostgreSQL the same
    database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(data_dir / CHECKPOINT_FILE)) as saver:
            await saver.setup()
            yield saver
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with AsyncPostgresSaver.from_conn_string(plain) as saver:
        await saver.setup()
        yield saver
