"""The assistant's world per test: a real SQLite knowledge base and LangGraph's SQLite saver on tmp files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tests.agent_helpers import World, knowledge_world, sqlite_saver


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with knowledge_world(tmp_path) as built:
        yield built


@pytest.fixture
async def saver(tmp_path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    async with sqlite_saver(tmp_path / "checkpoints.sqlite") as opened:
        yield opened
