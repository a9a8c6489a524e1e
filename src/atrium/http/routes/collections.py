"""Collections: list the ones the caller may read, make one (private, for its division, or for the whole
organisation), change who reads and writes it, delete it with its documents."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from atrium.http.deps import KnowledgeDep, Offset, PrincipalDep, require_role
from atrium.http.schemas.documents import CollectionList, CollectionView
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses
from atrium.knowledge import library

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


@router.get("", response_model=CollectionList)
async def list_collections(principal: PrincipalDep, knowledge: KnowledgeDep,
                           limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0) -> CollectionList:
    rows = await library.list_collections(knowledge, principal, limit=limit, offset=offset)
    return CollectionList(collections=[CollectionView.of(row, principal) for row in rows],
                          next_offset=offset + limit if len(rows) == limit else None)


@router.post("", status_code=201, dependencies=[require_role("member")], response_model=CollectionView,
             responses={**BODY, **error_responses(409)})
async def create_collection(body: CollectionCreate, principal: PrincipalDep, knowledge: KnowledgeDep) -> CollectionView:
    row = await library.create_collection(knowledge, principal, body.name, visibility=body.visibility,
                                          writers=body.writers)
    return CollectionView.of(row, principal)


@router.get("/{name}", response_model=CollectionView, responses=error_responses(404))
async def get_collection(name: CollectionName, principal: PrincipalDep, knowledge: KnowledgeDep) -> CollectionView:
    return CollectionView.of(await library.get_collection(knowledge, principal, name), principal)


@router.patch("/{name}", dependencies=[require_role("member")], response_model=CollectionView,
              responses={**BODY, **error_responses(404)})
async def change_collection(name: CollectionName, body: CollectionChange, principal: PrincipalDep,
                            knowledge: KnowledgeDep) -> CollectionView:
    row = await library.change_collection(knowledge, principal, name, visibility=body.visibility,
                                          writers=body.writers)
    return CollectionView.of(row, principal)


@router.delete("/{name}", status_code=204, dependencies=[require_role("member")], responses=error_responses(404))
async def delete_collection(name: CollectionName, principal: PrincipalDep, knowledge: KnowledgeDep) -> None:
    """Delete the collection, its documents and their vectors."""
    await library.delete_collection(knowledge, principal, name)
