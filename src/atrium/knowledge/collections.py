"""Collections: who may read and write a tenant's named sets of documents (rules in
``atrium.accounts.ownership``). Caller-facing functions take the principal and answer ``NotFound`` for a
collection the caller may not read, ``Forbidden`` for one it may read but not change; ``ensure`` serves
Atrium's own ingestion (CLI, bootstrap), which makes organisation-wide collections."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import (
    VISIBILITIES,
    WRITERS,
    may_manage_collection,
    may_read_collection,
    may_write_collection,
    owner_columns,
    readable_collections,
)
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.models import Collection, new_id, utcnow

# Atrium's own collections (the artifacts' search index, ``atrium.conversations.artifacts.index``): no
# caller may make one, so no caller can own one or read what Atrium keeps there.
RESERVED_PREFIX = "atrium."


async def readable_names(session: AsyncSession, principal: Principal) -> list[str]:
    rows = await session.scalars(select(Collection.name).where(Collection.org_id == principal.org_id,
                                                               readable_collections(principal)))
    return list(rows)


async def searchable(session: AsyncSession, principal: Principal,
                     requested: Sequence[str] | None) -> list[str]:
    """The collections a search on behalf of ``principal`` may look in: the ``requested`` ones (each must
    be readable, else ``NotFound``), or every readable one."""
    return among(await readable_names(session, principal), requested)


def among(readable: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    """The ``requested`` collections, each of which must be ``readable`` (else ``NotFound``), or all of
    ``readable``."""
    if requested is None:
        return list(readable)
    allowed = set(readable)
    for name in requested:
        if name not in allowed:
            raise NotFound(f"No such collection: {name}.")
    return list(requested)


async def _find(session: AsyncSession, org_id: str, name: str) -> Collection | None:
    return await session.scalar(select(Collection).where(Collection.org_id == org_id, Collection.name == name))


async def get_readable(session: AsyncSession, principal: Principal, name: str) -> Collection:
    collection = await _find(session, principal.org_id, name)
    if collection is None or not may_read_collection(collection, principal):
        raise NotFound("No such collection.")
    return collection


async def get_writable(session: AsyncSession, principal: Principal, name: str) -> Collection:
    collection = await get_readable(session, principal, name)
    if not may_write_collection(collection, principal):
        raise Forbidden("You may read this collection but not change its documents.")
    return collection


async def get_manageable(session: AsyncSession, principal: Principal, name: str) -> Collection:
    collection = await get_readable(session, principal, name)
    if not may_manage_collection(collection, principal):
        raise Forbidden("Only the collection's owner or an admin over it may change or delete it.")
    return collection


def check_settings(visibility: str, writers: str) -> None:
    if visibility not in VISIBILITIES:
        raise InvalidRequest(f"visibility must be one of {', '.join(VISIBILITIES)}.")
    if writers not in WRITERS:
        raise InvalidRequest(f"writers must be one of {', '.join(WRITERS)}.")


async def create(session: AsyncSession, principal: Principal, name: str, *, visibility: str | None = None,
                 writers: str = "readers") -> Collection:
    """A new collection owned by ``principal``. Default visibility: the caller's division when it has one,
    else the organisation. Only a principal in a division can make a division collection (its own)."""
    if not principal.has_role("member"):
        raise Forbidden("This needs the member role.")
    if name.startswith(RESERVED_PREFIX):
        raise InvalidRequest(f"Collection names starting with {RESERVED_PREFIX!r} are reserved for Atrium.")
    visibility = visibility or ("division" if principal.division_id is not None else "org")
    check_settings(visibility, writers)
    if visibility == "division" and principal.division_id is None:
        raise InvalidRequest("visibility 'division' needs a principal that belongs to a division.")
    if visibility == "org" and principal.division_id is not None and not principal.has_role("admin"):
        raise Forbidden("A division member cannot publish a collection to the whole organisation.")
    if await _find(session, principal.org_id, name) is not None:
        raise Conflict("A collection with this name exists.")
    made = await _insert_if_absent(session, {
        "id": new_id(), "org_id": principal.org_id, "name": name, "visibility": visibility, "writers": writers,
        "division_id": principal.division_id, "created_at": utcnow(), **owner_columns(principal)})
    collection = await _find(session, principal.org_id, name)
    if not made or collection is None:
        # Made by a concurrent request since the look above, or (PostgreSQL) one the caller may not read,
        # invisible in its scope (RLS): only the unique (org_id, name) index saw it.
        raise Conflict("A collection with this name exists." if collection is not None else
                       "A collection with this name exists and is not shared with you: choose another name.")
    return collection


async def _insert_if_absent(session: AsyncSession, values: dict[str, object]) -> bool:
    """Insert a collection row unless the organisation has one of that name (concurrent callers are safe:
    no integrity error, nothing inserted). True when this call made it."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Collection).values(values).on_conflict_do_nothing(index_elements=["org_id", "name"])
    return await session.scalar(statement.returning(Collection.id)) is not None


async def for_upload(session: AsyncSession, principal: Principal, name: str) -> Collection:
    """The collection an upload goes into: an existing one the caller may write, or a new one of its own."""
    existing = await _find(session, principal.org_id, name)
    if existing is None:
        try:
            return await create(session, principal, name)
        except Conflict:
            # Several first uploads at once: one made it, the others upload into it (if they may).
            existing = await _find(session, principal.org_id, name)
            if existing is None:
                raise
    if not may_read_collection(existing, principal):
        raise Conflict("A collection with this name exists and is not shared with you: choose another name.")
    if not may_write_collection(existing, principal):
        raise Forbidden("You may read this collection but not upload into it.")
    return existing


async def ensure(session: AsyncSession, org_id: str, name: str) -> None:
    """Atrium's own ingestion: make ``name`` an organisation-wide collection if it does not exist yet
    (concurrent callers are safe)."""
    await _insert_if_absent(session, {"id": new_id(), "org_id": org_id, "name": name, "visibility": "org",
                                      "writers": "readers", "created_at": utcnow()})


async def list_readable(session: AsyncSession, principal: Principal, limit: int, offset: int) -> list[Collection]:
    rows = await session.scalars(select(Collection).where(Collection.org_id == principal.org_id,
                                                          readable_collections(principal))
                                 .order_by(Collection.name).limit(limit).offset(offset))
    return list(rows)


async def change(session: AsyncSession, principal: Principal, name: str, *, visibility: str | None,
                 writers: str | None) -> Collection:
    collection = await get_manageable(session, principal, name)
    new_visibility = visibility or collection.visibility
    new_writers = writers or collection.writers
    check_settings(new_visibility, new_writers)
    if new_visibility == "division" and collection.division_id is None:
        if principal.division_id is None:
            raise InvalidRequest("visibility 'division' needs a collection made in a division.")
        collection.division_id = principal.division_id
    if new_visibility == "org" and collection.visibility != "org" and principal.division_id is not None \
            and not principal.has_role("admin"):
        raise Forbidden("A division member cannot publish a collection to the whole organisation.")
    collection.visibility, collection.writers = new_visibility, new_writers
    await session.flush()
    return collection
