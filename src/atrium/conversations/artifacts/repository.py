"""Artifacts and their versions in the database, and who may do what with them. Every function takes the
session of a transaction on behalf of the principal (``principal_session``: on PostgreSQL the
``principal_access`` policies narrow it too) and filters on the principal's organisation itself.

Who may:

* **read** an artifact and its versions: as a collection with the same visibility (``org``: everyone in
  the organisation; ``division``: its members and the organisation's unscoped admins; ``private``: its
  owner). Anyone else is told it does not exist (``NotFound``).
* **change** it (edit, retitle, change its visibility, delete): a reader with the member role that owns
  it, or an admin over it (an unscoped admin for an ``org`` artifact, an admin of its division for a
  ``division`` one); other readers get ``Forbidden``. Only the owner may make an artifact private (an admin
  would hide it from themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete as sa_delete
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import (
    VISIBILITIES,
    is_owner,
    may_manage_collection,
    may_read_collection,
    owner_columns,
    visible_to,
)
from atrium.accounts.principal import Principal
from atrium.conversations.artifacts.content import Draft
from atrium.errors import Forbidden, InvalidRequest, NotFound
from atrium.store.models import Artifact, ArtifactVersion, new_id


def check_visibility(principal: Principal, visibility: str, *, division_id: str | None) -> None:
    """May ``principal`` give an artifact (of ``division_id``) this visibility?"""
    if visibility not in VISIBILITIES:
        raise InvalidRequest(f"visibility must be one of {', '.join(VISIBILITIES)}.")
    if visibility == "division" and division_id is None:
        raise InvalidRequest("visibility 'division' needs a principal that belongs to a division.")
    if visibility == "org" and principal.division_id is not None and not principal.has_role("admin"):
        raise Forbidden("A division member cannot publish an artifact to the whole organisation.")


def created_by(principal: Principal) -> str | None:
    return principal.user_id or principal.api_key_id or owner_columns(principal)["api_key_id"]


async def get_readable(session: AsyncSession, principal: Principal, artifact_id: str) -> Artifact:
    artifact = await session.scalar(select(Artifact).where(Artifact.org_id == principal.org_id,
                                                           Artifact.id == artifact_id))
    if artifact is None or not may_read_collection(artifact, principal):
        raise NotFound("No such artifact.")
    return artifact


async def get_changeable(session: AsyncSession, principal: Principal, artifact_id: str) -> Artifact:
    artifact = await get_readable(session, principal, artifact_id)
    if not may_manage_collection(artifact, principal):
        raise Forbidden("Only the artifact's owner or an admin over it may change it.")
    return artifact


async def list_readable(session: AsyncSession, principal: Principal, *, kind: str | None, limit: int,
                        offset: int) -> list[Artifact]:
    """The artifacts ``principal`` may read, the last changed first."""
    query = select(Artifact).where(Artifact.org_id == principal.org_id, visible_to(Artifact, principal))
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    rows = await session.scalars(query.order_by(Artifact.updated_at.desc(), Artifact.id.desc())
                                 .limit(limit).offset(offset))
    return list(rows)


async def readable_among(session: AsyncSession, principal: Principal, ids: Sequence[str], *,
                         kind: str | None = None) -> dict[str, Artifact]:
    """Which of ``ids`` ``principal`` may read (of ``kind``): search results are filtered through this."""
    if not ids:
        return {}
    query = select(Artifact).where(Artifact.org_id == principal.org_id, Artifact.id.in_(list(ids)),
                                   visible_to(Artifact, principal))
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    return {row.id: row for row in await session.scalars(query)}


async def create(session: AsyncSession, principal: Principal, kind: str, draft: Draft, *, visibility: str,
                 conversation_id: str | None, agent_thread_id: str | None = None) -> tuple[Artifact, ArtifactVersion]:
    if not principal.has_role("member"):
        raise Forbidden("This needs the member role.")
    check_visibility(principal, visibility, division_id=principal.division_id)
    now = datetime.now(UTC)
    artifact = Artifact(id=new_id(), org_id=principal.org_id, division_id=principal.division_id,
                        visibility=visibility, kind=kind, title=draft.title, description=draft.description,
                        current_version=1, conversation_id=conversation_id, agent_thread_id=agent_thread_id,
                        created_at=now, updated_at=now,
                        **owner_columns(principal))
    session.add(artifact)
    await session.flush()
    return artifact, await _write_version(session, principal, artifact, 1, draft, now)


async def add_version(session: AsyncSession, principal: Principal, artifact: Artifact,
                      draft: Draft) -> ArtifactVersion:
    """A new current version of ``artifact`` (one the caller may change)."""
    now = datetime.now(UTC)
    number = artifact.current_version + 1
    version = await _write_version(session, principal, artifact, number, draft, now)
    artifact.current_version, artifact.title, artifact.description = number, draft.title, draft.description
    artifact.updated_at = now
    await session.flush()
    return version


async def _write_version(session: AsyncSession, principal: Principal, artifact: Artifact, number: int,
                         draft: Draft, now: datetime) -> ArtifactVersion:
    version = ArtifactVersion(artifact_id=artifact.id, number=number, org_id=artifact.org_id, title=draft.title,
                              description=draft.description, content=draft.content,
                              created_by=created_by(principal), created_at=now)
    session.add(version)
    await session.flush()
    return version


def change_visibility(artifact: Artifact, principal: Principal, visibility: str) -> None:
    """Give ``artifact`` (one the caller may change) another visibility."""
    if visibility == artifact.visibility:
        return
    if visibility == "private" and not is_owner(artifact, principal):
        raise Forbidden("Only the artifact's owner may make it private.")
    division_id = artifact.division_id
    if visibility == "division" and division_id is None:
        division_id = principal.division_id
    check_visibility(principal, visibility, division_id=division_id)
    artifact.visibility, artifact.division_id = visibility, division_id
    artifact.updated_at = datetime.now(UTC)


async def get_version(session: AsyncSession, artifact: Artifact, number: int) -> ArtifactVersion:
    version = await session.scalar(select(ArtifactVersion).where(ArtifactVersion.org_id == artifact.org_id,
                                                                 ArtifactVersion.artifact_id == artifact.id,
                                                                 ArtifactVersion.number == number))
    if version is None:
        raise NotFound("No such version.")
    return version


async def list_versions(session: AsyncSession, artifact: Artifact, *, limit: int,
                        offset: int) -> list[ArtifactVersion]:
    """The versions of ``artifact``, the newest first."""
    rows = await session.scalars(select(ArtifactVersion).where(ArtifactVersion.org_id == artifact.org_id,
                                                               ArtifactVersion.artifact_id == artifact.id)
                                 .order_by(ArtifactVersion.number.desc()).limit(limit).offset(offset))
    return list(rows)


async def delete_made_by(session: AsyncSession, org_id: str, *, conversation_id: str | None = None,
                         agent_thread_id: str | None = None) -> list[str]:
    """Delete every artifact of ``org_id`` made in the conversation or by the agent thread (whoever owns
    it: the caller erases what that conversation or thread produced), every version too; their ids."""
    if conversation_id is None and agent_thread_id is None:
        return []
    made_by = (Artifact.conversation_id == conversation_id) if conversation_id is not None else (
        Artifact.agent_thread_id == agent_thread_id)
    ids = list(await session.scalars(select(Artifact.id).where(Artifact.org_id == org_id, made_by)))
    if ids:
        await session.execute(sa_delete(ArtifactVersion).where(ArtifactVersion.org_id == org_id,
                                                               ArtifactVersion.artifact_id.in_(ids)))
        await session.execute(sa_delete(Artifact).where(Artifact.org_id == org_id, Artifact.id.in_(ids)))
    return ids


async def delete(session: AsyncSession, artifact: Artifact) -> None:
    """Delete ``artifact`` (one the caller may change) and every version of it."""
    await session.execute(sa_delete(ArtifactVersion).where(ArtifactVersion.org_id == artifact.org_id,
                                                           ArtifactVersion.artifact_id == artifact.id))
    await session.execute(sa_delete(Artifact).where(Artifact.org_id == artifact.org_id, Artifact.id == artifact.id))
