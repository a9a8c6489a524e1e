"""The assistant's threads on LangGraph's SQLite saver (a file, as in the embedded default): a thread goes
on after a restart (a new graph and a new saver on the same file), and what each turn adds to the
checkpoint file is bounded: it does not grow with the length of the conversation."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from atrium.agents.checkpoints import psycopg_url
from atrium.agents.state import MAX_MESSAGES
from atrium.gateway.providers.fake import FakeChatModel
from tests.agent_helpers import MEMBER, assistant, knowledge_world, sqlite_saver, turn

QUESTIONS = ["How long do refunds take?", "When are invoices emailed?"]
# Every checkpoint and pending write one turn adds (about 29 kB measured: the SQLite saver keeps the whole
# state at each of a turn's seven steps, 12 messages and three sources at most).
MAX_TURN_BYTES = 40_000


async def stored_bytes(saver: AsyncSqliteSaver, thread: str) -> int:
    total = 0
    for query in ("select coalesce(sum(length(checkpoint) + length(metadata)), 0) from checkpoints where thread_id = ?",
                  "select coalesce(sum(length(value)), 0) from writes where thread_id = ?"):
        async with saver.conn.execute(query, (thread,)) as cursor:
            row = await cursor.fetchone()
            total += int(row[0]) if row is not None else 0
    return total


async def test_a_thread_goes_on_after_a_restart(tmp_path: Path) -> None:
    file = tmp_path / "checkpoints.sqlite"
    async with knowledge_world(tmp_path) as world:
        async with sqlite_saver(file) as saver:
            first = await turn(assistant(world, FakeChatModel(), saver), QUESTIONS[0], thread="kept")
        assert first.state["answer"].endswith("[1]")

        model = FakeChatModel()  # a new process: new graph, new saver, same file, same thread id
        async with sqlite_saver(file) as saver:
            graph = assistant(world, model, saver)
            before = await graph.aget_state({"configurable": {"thread_id": "kept", "principal": MEMBER}})
            assert before.values["messages"] == first.state["messages"]
            second = await turn(graph, QUESTIONS[1], thread="kept")
    assert [m["content"] for m in second.state["messages"]][:2] == [QUESTIONS[0], first.state["answer"]]
    assert len(second.state["messages"]) == 4
    [answer_call] = model.requests
    assert answer_call.messages[1].text == QUESTIONS[0]  # the earlier exchange is the prompt's history
    assert answer_call.messages[2].text == first.state["answer"]


async def test_checkpoint_bytes_per_turn_are_bounded(tmp_path: Path) -> None:
    turns = MAX_MESSAGES // 2 + 6
    added = []
    async with knowledge_world(tmp_path) as world, sqlite_saver(tmp_path / "checkpoints.sqlite") as saver:
        graph = assistant(world, FakeChatModel(), saver)
        before = 0
        for number in range(turns):
            result = await turn(graph, QUESTIONS[number % 2], thread="long")
            assert result.state["answer"].endswith("[1]")
            now = await stored_bytes(saver, "long")
            added.append(now - before)
            before = now
    assert max(added) <= MAX_TURN_BYTES, added
    # Once the history is full (MAX_MESSAGES), a turn adds no more than an earlier full-history turn did.
    full = MAX_MESSAGES // 2
    assert max(added[full + 1:]) <= 1.1 * added[full], added
    assert len(result.state["messages"]) == MAX_MESSAGES and result.state["passages"] == []


@pytest.mark.integration
async def test_a_thread_goes_on_after_a_restart_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """LangGraph's PostgreSQL saver (the scale profile's), opened afresh for the second turn."""
    async with knowledge_world(tmp_path) as world:
        async with AsyncPostgresSaver.from_conn_string(psycopg_url(postgres_url)) as saver:
            await saver.setup()
            first = await turn(assistant(world, FakeChatModel(), saver), QUESTIONS[0], thread="kept")
        async with AsyncPostgresSaver.from_conn_string(psycopg_url(postgres_url)) as saver:
            second = await turn(assistant(world, FakeChatModel(), saver), QUESTIONS[1], thread="kept")
    assert type(saver).__name__ == "AsyncPostgresSaver"
    assert [m["content"] for m in second.state["messages"]][:2] == [QUESTIONS[0], first.state["answer"]]
    assert not (tmp_path / "checkpoints.sqlite").exists()
