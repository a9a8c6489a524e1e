"""A user's data rights: export everything Atrium holds about them, and erase their account with everything
they own (documents, artifacts and their vectors included), audited.

Both cross organisations (a user may belong to several), so they read and delete with explicit
``user_id`` filters in the system scope; erasing documents goes through ``KnowledgeService`` so the vector
index loses them too. Usage rows are billing records of the organisations: erasure keeps their numbers and
removes the user from them (``user_id`` set to NULL).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from atrium.accounts.audit import record
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, NotFound
from atrium.knowledge.service import KnowledgeService
from atrium.store.engine import Database
from atrium.store.models import (
    AgentRun,
    AgentThread,
    Artifact,
    ArtifactVersion,
    Change,
    Chunk,
    Collection,
    Conversation,
    Document,
    Job,
    Membership,
    Message,
    NotificationDevice,
    Project,
    QueryRecord,
    UsageRecord,
    User,
)

EXPORT_FORMAT = "atrium.export.v1"

# Erases one agent thread whole (runs, checkpoints, what it made): ``(org_id, thread_id)``; the agents room's.
ThreadEraser = Callable[[str, str], Awaitable[object]]


def _user_of(principal: Principal) -> str:
    if principal.user_id is None:
        raise Forbidden("This acts on a user's own data: use a credential of that user, not a key without one.")
    return principal.user_id


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def export(db: Database, principal: Principal) -> dict[str, Any]:
    """Everything of the caller's: account, memberships, conversations with messages, queries, documents
    uploaded (with their text), collections owned, usage."""
    user_id = _user_of(principal)
    async with db.system_session() as session:
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound("No such user.")
        memberships = (await session.scalars(select(Membership).where(Membership.user_id == user_id))).all()
        conversations = (await session.scalars(select(Conversation).where(Conversation.user_id == user_id)
                                               .order_by(Conversation.created_at))).all()
        messages: dict[str, list[Message]] = defaultdict(list)
        if conversations:
            for message in await session.scalars(
                    select(Message).where(Message.conversation_id.in_([c.id for c in conversations]))
                    .order_by(Message.created_at, Message.id)):
                messages[message.conversation_id].append(message)
        queries = (await session.scalars(select(QueryRecord).where(QueryRecord.user_id == user_id)
                                         .order_by(QueryRecord.created_at))).all()
        documents = (await session.scalars(select(Document).where(Document.user_id == user_id)
                                           .order_by(Document.created_at))).all()
        texts: dict[str, list[str]] = defaultdict(list)
        if documents:
            for document_id, text in await session.execute(
                    select(Chunk.document_id, Chunk.text).where(Chunk.document_id.in_([d.id for d in documents]))
                    .order_by(Chunk.document_id, Chunk.ordinal)):
                texts[document_id].append(text)
        collections = (await session.scalars(select(Collection).where(Collection.user_id == user_id))).all()
        artifacts = (await session.scalars(select(Artifact).where(Artifact.user_id == user_id)
                                           .order_by(Artifact.created_at))).all()
        versions: dict[str, list[ArtifactVersion]] = defaultdict(list)
        if artifacts:
            for version in await session.scalars(
                    select(ArtifactVersion).where(ArtifactVersion.artifact_id.in_([a.id for a in artifacts]))
                    .order_by(ArtifactVersion.artifact_id, ArtifactVersion.number)):
                versions[version.artifact_id].append(version)
        devices = (await session.scalars(select(NotificationDevice).where(NotificationDevice.user_id == user_id)
                                         .order_by(NotificationDevice.created_at))).all()
        usage = (await session.execute(
            select(UsageRecord.org_id, UsageRecord.model, UsageRecord.endpoint, func.count(),
                   func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.completion_tokens),
                   func.sum(UsageRecord.cost_usd))
            .where(UsageRecord.user_id == user_id)
            .group_by(UsageRecord.org_id, UsageRecord.model, UsageRecord.endpoint))).all()
    return {
        "format": EXPORT_FORMAT,
        "user": {"id": user.id, "email": user.email, "name": user.name, "username": user.username,
                 "interests": user.interests, "home_org_id": user.org_id,
                 "is_service": user.is_service, "created_at": _iso(user.created_at)},
        "memberships": [{"org_id": m.org_id, "role": m.role, "division_id": m.division_id,
                         "created_at": _iso(m.created_at)} for m in memberships],
        "conversations": [
            {"id": c.id, "org_id": c.org_id, "title": c.title, "created_at": _iso(c.created_at),
             "messages": [{"id": m.id, "role": m.role, "content": m.content, "status": m.status,
                           "sources": m.sources or [], "created_at": _iso(m.created_at)} for m in messages[c.id]]}
            for c in conversations],
        "queries": [{"id": q.id, "org_id": q.org_id, "question": q.question, "answer": q.answer, "status": q.status,
                     "created_at": _iso(q.created_at)} for q in queries],
        "documents": [{"id": d.id, "org_id": d.org_id, "collection": d.collection, "source": d.source,
                       "title": d.title, "created_at": _iso(d.created_at), "text": "\n\n".join(texts[d.id])}
                      for d in documents],
        "collections": [{"org_id": c.org_id, "name": c.name, "visibility": c.visibility, "writers": c.writers}
                        for c in collections],
        "artifacts": [
            {"id": a.id, "org_id": a.org_id, "kind": a.kind, "visibility": a.visibility,
             "conversation_id": a.conversation_id, "created_at": _iso(a.created_at),
             "versions": [{"number": v.number, "title": v.title, "description": v.description, "content": v.content,
                           "created_at": _iso(v.created_at)} for v in versions[a.id]]}
            for a in artifacts],
        "notification_devices": [{"id": d.id, "org_id": d.org_id, "kind": d.kind, "label": d.label,
                                  "created_at": _iso(d.created_at)} for d in devices],
        "usage": [{"org_id": org_id, "model": model, "endpoint": endpoint, "calls": int(calls),
                   "prompt_tokens": int(prompt or 0), "completion_tokens": int(completion or 0),
                   "cost_usd": float(cost or 0.0)}
                  for org_id, model, endpoint, calls, prompt, completion, cost in usage],
    }


async def erase(db: Database, knowledge: KnowledgeService, principal: Principal, *,
                ip: str | None = None, erase_thread: ThreadEraser | None = None) -> dict[str, int]:
    """Erase the caller's account and everything it owns, in every organisation. Refused (``409``) while
    the user is the last active owner of an organisation. Returns what was erased, also in the audit row
    (written in the home organisation, so the trail outlives the account). ``erase_thread``: how an agent
    thread goes with its checkpoints (without it, only its rows go)."""
    user_id = _user_of(principal)
    if principal.via == "api_key":
        raise Forbidden("Erasing an account needs the user's own login (an access token), not an API key.")
    async with db.system_session() as session:
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound("No such user.")
        for org_id in (await session.scalars(select(Membership.org_id).where(
                Membership.user_id == user_id, Membership.role == "owner"))).all():
            others = await session.scalar(
                select(func.count()).select_from(Membership).join(User, User.id == Membership.user_id)
                .where(Membership.org_id == org_id, Membership.role == "owner", Membership.user_id != user_id,
                       User.disabled_at.is_(None)))
            if not others:
                raise Conflict("You are the last owner of an organisation: make someone else an owner first.")
        home_org = user.org_id
        document_orgs = set((await session.scalars(select(Document.org_id).where(Document.user_id == user_id)
                                                   .distinct())).all())
        owned_collections = (await session.execute(select(Collection.org_id, Collection.name).where(
            Collection.user_id == user_id))).all()
        threads = (await session.execute(select(AgentThread.org_id, AgentThread.id).where(
            AgentThread.user_id == user_id))).all()
    counts = {"documents": 0, "collections": len(owned_collections), "agent_threads": len(threads)}
    if erase_thread is not None:  # checkpoints, runs and what each thread made, before the account goes
        for org_id, thread_id in threads:
            await erase_thread(org_id, thread_id)
    # Documents first, through the knowledge service, so their vectors go too.
    for org_id, name in owned_collections:
        counts["documents"] += await knowledge.delete_documents(org_id, collection=name, drop_collection=True)
    for org_id in document_orgs:
        counts["documents"] += await knowledge.delete_documents(org_id, user_id=user_id)
    async with db.system_session() as session:
        conversation_ids = (await session.scalars(select(Conversation.id).where(
            Conversation.user_id == user_id))).all()
        if conversation_ids:
            await session.execute(delete(Message).where(Message.conversation_id.in_(conversation_ids)))
        counts["conversations"] = len(conversation_ids)
        await session.execute(delete(Conversation).where(Conversation.user_id == user_id))
        # Their versions go with them (foreign key); their search index entries went with the documents.
        counts["artifacts"] = (await session.execute(delete(Artifact).where(
            Artifact.user_id == user_id))).rowcount  # type: ignore[attr-defined]
        thread_ids = [thread_id for _, thread_id in threads]
        if thread_ids:  # what an eraser left (none given), and a thread made since
            await session.execute(delete(AgentRun).where(AgentRun.thread_id.in_(thread_ids)))
        await session.execute(delete(AgentThread).where(AgentThread.user_id == user_id))
        counts["projects"] = (await session.execute(delete(Project).where(
            Project.user_id == user_id))).rowcount  # type: ignore[attr-defined]
        await session.execute(delete(Change).where(Change.user_id == user_id))  # the sync log of them too
        counts["queries"] = (await session.execute(delete(QueryRecord).where(
            QueryRecord.user_id == user_id))).rowcount  # type: ignore[attr-defined]
        counts["jobs"] = (await session.execute(delete(Job).where(Job.user_id == user_id))).rowcount  # type: ignore[attr-defined]
        counts["notification_devices"] = (await session.execute(delete(NotificationDevice).where(
            NotificationDevice.user_id == user_id))).rowcount  # type: ignore[attr-defined]
        counts["usage_rows_anonymised"] = (await session.execute(update(UsageRecord).where(
            UsageRecord.user_id == user_id).values(user_id=None))).rowcount  # type: ignore[attr-defined]
        await record(session, "user.erase", actor=principal, org_id=home_org, target_type="user",
                     target_id=user_id, details={**counts, "via": principal.via}, ip=ip)
        # Memberships, keys and refresh tokens go with the account (foreign keys cascade).
        await session.execute(delete(User).where(User.id == user_id))
    return counts
