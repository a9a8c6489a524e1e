"""Collections: list the ones the caller may read, make one (private, for its division, or for the whole
organisation), change who reads and writes it, delete it with its documents."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from atrium.accounts.ownership import may_manage_collection, may_write_collection, principal_session
from atrium.accounts.principal import Principal
from atrium.http.deps import Offset, PrincipalDep, ServicesDep, require_role
from atrium.http.schemas.documents import CollectionList, CollectionView
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses
from atrium.knowledge import collections as repo
from atrium.knowledge.service import check_collection
from atrium.store.models import Collection

router = APIRouter(prefix="/api/v1/collections", tags=["collections"], responses=AUTHENTICATED)
CollectionName = Annotated[str, Path(min_length=1, max_length=100)]
Visibility = Literal["org", "division", "private"]
Writers = Literal["owner", "readers"]


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    visibility: Visibility | None = None
    writers: Writers = "readers"


class CollectionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visibility: Visibility | None = None
    writers: Writers | None = None


def collection_view(row: Collection, principal: Principal) -> dict[str, Any]:
    return {"name": row.name, "visibility": row.visibility, "writers": row.writers, "division_id": row.division_id,
            "owner_user_id": row.user_id, "created_at": row.created_at.isoformat(),
            "can_write": may_write_collection(row, principal), "can_manage": may_manage_collection(row, principal)}


@router.get("", response_model=CollectionList)
async def list_collections(principal: PrincipalDep, services: ServicesDep,
                           limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        rows = await repo.list_readable(session, principal, limit, offset)
    return {"collections": [collection_view(row, principal) for row in rows],
            "next_offset": offset + limit if len(rows) == limit else None}


@router.post("", status_code=201, dependencies=[require_role("member")], response_model=CollectionView,
             responses={**BODY, **error_responses(409)})
async def create_collection(body: CollectionCreate, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    check_collection(body.name)
    async with principal_session(services.db, principal) as session:
        row = await repo.create(session, principal, body.name, visibility=body.visibility, writers=body.writers)
    return collection_view(row, principal)


@router.get("/{name}", response_model=CollectionView, responses=error_responses(404))
async def get_collection(name: CollectionName, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        row = await repo.get_readable(session, principal, name)
    return collection_view(row, principal)


@router.patch("/{name}", dependencies=[require_role("member")], response_model=CollectionView,
              responses={**BODY, **error_responses(404)})
async def change_collection(name: CollectionName, body: CollectionChange, principal: PrincipalDep,
                            services: ServicesDep) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        row = await repo.change(session, principal, name, visibility=body.visibility, writers=body.writers)
    await services.knowledge.announce_change(principal.org_id)
    return collection_view(row, principal)


@router.delete("/{name}", status_code=204, dependencies=[require_role("member")], responses=error_responses(404))
async def delete_collection(name: CollectionName, principal: PrincipalDep, services: ServicesDep) -> None:
    """Delete the collection, its documents and their vectors."""
    async with principal_session(services.db, principal) as session:
        await repo.get_manageable(session, principal, name)
    await services.knowledge.delete_documents(principal.org_id, collection=name, drop_collection=True)
