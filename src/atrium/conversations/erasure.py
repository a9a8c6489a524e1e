"""Deleting a conversation erases everything it holds, not only its row: its messages; its change-log
entries (one ``delete`` change stays, the tombstone sync clients learn the deletion from); its artifacts,
every version, with their text and vectors in the search index; the replay streams of its answers; and
the agent threads tied to it (a thread whose id is the conversation's, or whose metadata has its
``conversation_id``), with their runs, checkpoints and artifacts.

The rows go in one transaction; the search index, the replay buffer and the agent threads follow after
it commits (none can be reached by a transaction of the database). An answer still being generated in the
conversation finds its message gone and stores nothing (``repository.finish_message``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import admin
from atrium.conversations import repository as repo
from atrium.conversations.artifacts import repository as artifacts_repo
from atrium.conversations.artifacts.index import ArtifactIndex
from atrium.conversations.ports import StreamLog
from atrium.conversations.replay import stream_name
from atrium.store.engine import Database

# Erases the agent threads tied to a conversation: ``(org_id, conversation_id)`` -> how many.
ThreadEraser = Callable[[str, str], Awaitable[int]]


class ConversationErasure:
    """The two ways a conversation goes: its owner deletes it, or an admin erases it (audited)."""

    def __init__(self, db: Database, index: ArtifactIndex, stream_log: StreamLog,
                 threads: ThreadEraser | None = None) -> None:
        self.db = db
        self.index = index
        self.stream_log = stream_log
        self.threads = threads

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        """The caller's own conversation (``NotFound`` for anyone else's)."""
        async with principal_session(self.db, principal) as session:
            await repo.get_conversation(session, principal, conversation_id)  # the caller's, or NotFound
            # Artifacts first: the conversation's deletion would detach them (``ON DELETE SET NULL``).
            artifact_ids = await artifacts_repo.delete_made_by(session, principal.org_id,
                                                               conversation_id=conversation_id)
            message_ids = await repo.delete_conversation(session, principal, conversation_id)
        await self._after(principal.org_id, conversation_id, message_ids, artifact_ids)

    async def erase(self, principal: Principal, conversation_id: str, *, ip: str | None) -> None:
        """A conversation the admin administers (``admin.erase``: audited)."""
        async with self.db.tenant_session(principal.org_id) as session:
            # Artifacts first (see ``delete``); a conversation the admin may not erase rolls all back.
            artifact_ids = await artifacts_repo.delete_made_by(session, principal.org_id,
                                                               conversation_id=conversation_id)
            message_ids = await admin.erase(session, principal, conversation_id, ip=ip)
        await self._after(principal.org_id, conversation_id, message_ids, artifact_ids)

    async def _after(self, org_id: str, conversation_id: str, message_ids: list[str],
                     artifact_ids: list[str]) -> None:
        for artifact_id in artifact_ids:
            await self.index.remove(org_id, artifact_id)
        for message_id in message_ids:
            await self.stream_log.forget(stream_name(org_id, message_id))
        if self.threads is not None:
            await self.threads(org_id, conversation_id)
