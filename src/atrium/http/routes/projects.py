"""Project records (made by the ``project`` guided flow or the assistant's ``create_project`` tool): read
them. Public (``org``) projects are the organisation's; private ones their owner's alone (``404`` for
anyone else, admins included)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from atrium.accounts.ownership import is_owner
from atrium.http.deps import Offset, PrincipalDep, ProjectsDep, ResourceId
from atrium.http.schemas.errors import AUTHENTICATED, error_responses
from atrium.http.schemas.flows import ProjectList, ProjectView

router = APIRouter(prefix="/api/v1/projects", tags=["projects"], responses=AUTHENTICATED)


@router.get("", response_model=ProjectList)
async def list_projects(principal: PrincipalDep, projects: ProjectsDep,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0) -> ProjectList:
    """The projects the caller may read, newest first."""
    rows = await projects.list(principal, limit=limit, offset=offset)
    return ProjectList(projects=[ProjectView.of(row, is_owner(row, principal)) for row in rows],
                       next_offset=offset + limit if len(rows) == limit else None)


@router.get("/{project_id}", response_model=ProjectView, responses=error_responses(404))
async def get_project(project_id: ResourceId, principal: PrincipalDep, projects: ProjectsDep) -> ProjectView:
    row = await projects.get(principal, project_id)
    return ProjectView.of(row, is_owner(row, principal))
