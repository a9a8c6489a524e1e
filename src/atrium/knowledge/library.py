"""The collections use cases: list the ones the caller may read, make one, change who reads and writes it,
delete it with its documents. Each is one transaction on behalf of the caller (the rules are in
``atrium.knowledge.collections`` and ``atrium.accounts.ownership``) and returns the rows it read."""

from __future__ import annotations

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.knowledge import collections as repo
from atrium.knowledge.service import KnowledgeService, check_collection
from atrium.store.models import Collection


async def list_collections(knowledge: KnowledgeService, principal: Principal, *, limit: int,
                           offset: int) -> list[Collection]:
    async with principal_session(knowledge.db, principal) as session:
        return await repo.list_readable(session, principal, limit, offset)


async def create_collection(knowledge: KnowledgeService, principal: Principal, name: str, *,
                            visibility: str | None, writers: str) -> Collection:
    check_collection(name)
    async with principal_session(knowledge.db, principal) as session:
        return await repo.create(session, principal, name, visibility=visibility, writers=writers)


async def get_collection(knowledge: KnowledgeService, principal: Principal, name: str) -> Collection:
    async with principal_session(knowledge.db, principal) as session:
        return await repo.get_readable(session, principal, name)


async def change_collection(knowledge: KnowledgeService, principal: Principal, name: str, *,
                            visibility: str | None, writers: str | None) -> Collection:
    """Change who reads and writes the collection; every process forgets who could read it before."""
    async with principal_session(knowledge.db, principal) as session:
        row = await repo.change(session, principal, name, visibility=visibility, writers=writers)
    await knowledge.announce_change(principal.org_id)
    return row


async def delete_collection(knowledge: KnowledgeService, principal: Principal, name: str) -> None:
    """Delete the collection, its documents and their vectors (its owner or an admin over it)."""
    async with principal_session(knowledge.db, principal) as session:
        await repo.get_manageable(session, principal, name)
    await knowledge.delete_documents(principal.org_id, collection=name, drop_collection=True)
