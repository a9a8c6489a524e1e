"""Project records in the database: the ``ProjectRecords`` port's real adapter, and reading them back.

Made by the ``project`` guided flow and the assistant's ``create_project`` tool, always as the caller.
Who may do what (``atrium.accounts.ownership``, as for artifacts):

* create: members and above (viewers: ``Forbidden``); the caller owns it (its user, or the key acting as
  no user), with its division;
* read: an ``org`` project by the whole organisation; a ``private`` one by its owner only (admins
  included: ``404``); another organisation's: ``404``.

On PostgreSQL the same rules are Row-Level Security policies on ``projects`` (migration 0013).
"""

from __future__ import annotations

from sqlalchemy import select

from atrium.accounts.admin_base import aware
from atrium.accounts.ownership import owner_columns, principal_session, visible_to
from atrium.accounts.principal import Principal
from atrium.agents.ports import PROJECT_KINDS, ProjectRecord, ProjectVisibility
from atrium.errors import Forbidden, InvalidRequest, NotFound
from atrium.store.engine import Database
from atrium.store.models import Project

MAX_PROJECT_TITLE = 100
MAX_PROJECT_DESCRIPTION = 4000


def record_of(row: Project) -> ProjectRecord:
    return ProjectRecord(id=row.id, org_id=row.org_id, title=row.title, description=row.description,
                         user_id=row.user_id, kind=row.kind,
                         visibility="org" if row.visibility == "org" else "private", api_key_id=row.api_key_id,
                         created_at=aware(row.created_at))


class SqlProjectRecords:
    """``ProjectRecords`` over the ``projects`` table (module doc)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, principal: Principal, title: str, description: str, *, kind: str = "other",
                     visibility: ProjectVisibility = "private") -> ProjectRecord:
        if not principal.has_role("member"):
            raise Forbidden("Viewers may not create projects.")
        title, description = title.strip(), description.strip()
        if not title or len(title) > MAX_PROJECT_TITLE:
            raise InvalidRequest(f"A project title has 1 to {MAX_PROJECT_TITLE} characters.")
        if len(description) > MAX_PROJECT_DESCRIPTION:
            raise InvalidRequest(f"A project description has at most {MAX_PROJECT_DESCRIPTION} characters.")
        if kind not in PROJECT_KINDS:
            raise InvalidRequest(f"A project kind is one of: {', '.join(PROJECT_KINDS)}.")
        if visibility not in ("org", "private"):
            raise InvalidRequest("A project's visibility is org or private.")
        row = Project(org_id=principal.org_id, division_id=principal.division_id, visibility=visibility,
                      title=title, description=description, kind=kind, **owner_columns(principal))
        async with principal_session(self.db, principal) as session:
            session.add(row)
        return record_of(row)

    async def list(self, principal: Principal, *, limit: int, offset: int) -> list[ProjectRecord]:
        """The projects ``principal`` may read, newest first."""
        query = (select(Project).where(Project.org_id == principal.org_id, visible_to(Project, principal))
                 .order_by(Project.created_at.desc(), Project.id).limit(limit).offset(offset))
        async with principal_session(self.db, principal) as session:
            return [record_of(row) for row in await session.scalars(query)]

    async def get(self, principal: Principal, project_id: str) -> ProjectRecord:
        """The project, or ``NotFound`` (none, another organisation's, or someone else's private one)."""
        query = select(Project).where(Project.org_id == principal.org_id, Project.id == project_id,
                                      visible_to(Project, principal))
        async with principal_session(self.db, principal) as session:
            row = await session.scalar(query)
        if row is None:
            raise NotFound("No such project.")
        return record_of(row)
