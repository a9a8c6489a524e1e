"""SQLAlchemy 2 models: the durable truth of Atrium. Every tenant table carries ``org_id``.

Chunks keep their embedding as raw float32 bytes so the vector index can always be rebuilt from the
database (the index is derived data; the database wins).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets a real BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


# The columns most tables share, declared once (SQLAlchemy's Annotated mapped_column).
RowId = Annotated[str, mapped_column(String(32), primary_key=True, default=new_id)]
OrgRef = Annotated[str, mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)]
CreatedAt = Annotated[datetime, mapped_column(default=utcnow)]
# An owned object's owner: its user (kept, as null, when the user goes), or the key acting as no user, and
# the owner's division when it was made.
OwnerUser = Annotated[str | None, mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None,
                                                index=True)]
OwnerKey = Annotated[str | None, mapped_column(String(32), default=None)]
OwnerDivision = Annotated[str | None, mapped_column(String(32), default=None)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[RowId]
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]


class Division(Base):
    """A part of an organisation (a team, a department); keys, memberships and budgets may be scoped to one."""

    __tablename__ = "divisions"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_divisions_org_name"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]


class User(Base):
    """A person (or, with ``is_service``, a service account that only ever authenticates with API keys).
    ``org_id`` is the home organisation; ``memberships`` say where the user may act, and with what role."""

    __tablename__ = "users"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default="member")
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    # A handle chosen at onboarding (``agents/flows``), unique across the platform; None for older accounts.
    username: Mapped[str | None] = mapped_column(String(40), unique=True, default=None)
    interests: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    is_service: Mapped[bool] = mapped_column(default=False)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[CreatedAt]


class Membership(Base):
    """A user's role in an organisation, optionally narrowed to one division."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "org_id", name="uq_memberships_user_org"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    division_id: Mapped[str | None] = mapped_column(ForeignKey("divisions.id", ondelete="SET NULL"), default=None)
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[CreatedAt]


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    division_id: Mapped[str | None] = mapped_column(ForeignKey("divisions.id", ondelete="SET NULL"), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    # The key's own limits (None: only the user and org limits apply).
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class RefreshToken(Base):
    """One refresh token of a login session (``family_id``). Each use rotates it: the row is marked used
    and a new one is issued in the same family; presenting a used token again revokes the whole family
    (it was stolen). Only the SHA-256 of the token is stored."""

    __tablename__ = "refresh_tokens"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    division_id: Mapped[str | None] = mapped_column(String(32), default=None)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Conversation(Base):
    """Private to its owner: ``user_id``, or, for a key that acts as no user, ``api_key_id``. ``division_id``
    is the owner's division when it was created (what a division admin may list and erase)."""

    __tablename__ = "conversations"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[OwnerUser]
    api_key_id: Mapped[OwnerKey]
    division_id: Mapped[OwnerDivision]
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_created", "conversation_id", "created_at"),
                      # the answers still being produced (what the abandoned-answer check scans)
                      Index("ix_messages_pending", "created_at", sqlite_where=text("status = 'pending'"),
                            postgresql_where=text("status = 'pending'")))
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text, default="")
    # pending (assistant still generating), complete, error
    status: Mapped[str] = mapped_column(String(20), default="complete")
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    sources: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[CreatedAt]


class Change(Base):
    """One change of a conversation or one of its messages (``op``: ``upsert`` or ``delete``), appended in
    the transaction that made it, with the conversation's owner: what ``GET /api/v1/sync`` answers. Read in
    the order (``tx``, ``seq``): on PostgreSQL ``tx`` is the writing transaction's id (a server default), so
    a reader can leave out what transactions still running may yet commit; on SQLite, where writers take
    turns, it is 0 and ``seq`` alone orders."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_org_tx_seq", "org_id", "tx", "seq"),)
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    api_key_id: Mapped[OwnerKey]
    entity: Mapped[str] = mapped_column(String(20))  # conversation, message
    entity_id: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[str] = mapped_column(String(32))
    op: Mapped[str] = mapped_column(String(10))  # upsert, delete
    tx: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue())
    created_at: Mapped[CreatedAt]


class Collection(Base):
    """A named set of documents. Who reads it: ``visibility`` ``org`` (everyone in the organisation),
    ``division`` (members of ``division_id``) or ``private`` (its owner). Who writes it (upload, delete
    documents): ``writers`` ``owner`` (its owner and admins over it) or ``readers`` (every reader with the
    member role). Owner: ``user_id``, or ``api_key_id`` for a key that acts as no user; neither for the
    collections Atrium makes itself (bootstrap docs)."""

    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_collections_org_name"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    name: Mapped[str] = mapped_column(String(100))
    visibility: Mapped[str] = mapped_column(String(10), default="org")  # org, division, private
    writers: Mapped[str] = mapped_column(String(10), default="readers")  # owner, readers
    division_id: Mapped[OwnerDivision]
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    api_key_id: Mapped[OwnerKey]
    created_at: Mapped[CreatedAt]


class Document(Base):
    """Belongs to a collection (whose visibility it has); ``user_id`` / ``api_key_id`` name who uploaded it."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_org_collection", "org_id", "collection"),)
    id: Mapped[RowId]
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    collection: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    api_key_id: Mapped[OwnerKey]
    source: Mapped[str] = mapped_column(String(1000))
    title: Mapped[str] = mapped_column(String(500), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[CreatedAt]


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_org_collection", "org_id", "collection"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    collection: Mapped[str] = mapped_column(String(100))
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(String(1000), default="")
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class KnowledgeRevision(Base):
    """Bumped in the same transaction as every chunk change, so index holders know to reconcile."""

    __tablename__ = "knowledge_revisions"
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class Job(Base):
    """Private to who queued it (``user_id``, or ``api_key_id`` for a key acting as no user)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    api_key_id: Mapped[OwnerKey]
    kind: Mapped[str] = mapped_column(String(50))
    # queued, running, succeeded, failed
    status: Mapped[str] = mapped_column(String(20), default="queued")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueryRecord(Base):
    """Private to its owner (``user_id``, or ``api_key_id`` for a key acting as no user)."""

    __tablename__ = "queries"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[OwnerUser]
    api_key_id: Mapped[OwnerKey]
    division_id: Mapped[OwnerDivision]
    question: Mapped[str] = mapped_column(Text)
    collection: Mapped[str | None] = mapped_column(String(100), default=None)
    # pending, complete, error
    status: Mapped[str] = mapped_column(String(20), default="pending")
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    sources: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[CreatedAt]
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class Artifact(Base):
    """A typed document the caller keeps (markdown, code, checklist, table, JSON); its content lives in
    ``artifact_versions``, ``current_version`` naming the latest. Owner and visibility as a collection's:
    ``visibility`` ``org``, ``division`` (``division_id``) or ``private`` (its owner: ``user_id``, or
    ``api_key_id`` for a key acting as no user). See ``atrium.conversations.artifacts``."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_org_updated", "org_id", "updated_at"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[OwnerUser]
    api_key_id: Mapped[OwnerKey]
    division_id: Mapped[OwnerDivision]
    visibility: Mapped[str] = mapped_column(String(10), default="private")  # org, division, private
    kind: Mapped[str] = mapped_column(String(20))  # markdown, code, checklist, table, json
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    conversation_id: Mapped[str | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"),
                                                        default=None, index=True)
    agent_thread_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)  # made by a run
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Project(Base):
    """A project record (made by the ``project`` guided flow or the assistant's ``create_project`` tool).
    Owner and visibility as an artifact's: ``org`` (the organisation reads it) or ``private`` (its owner:
    ``user_id``, or ``api_key_id`` for a key acting as no user). See ``atrium.agents.projects``."""

    __tablename__ = "projects"
    __table_args__ = (Index("ix_projects_org_created", "org_id", "created_at"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[OwnerUser]
    api_key_id: Mapped[OwnerKey]
    division_id: Mapped[OwnerDivision]
    visibility: Mapped[str] = mapped_column(String(10), default="private")  # org, private
    title: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(30), default="other")
    created_at: Mapped[CreatedAt]


class ArtifactVersion(Base):
    """One version of an artifact, never changed once written: its title, description and content (a JSON
    object whose shape depends on the artifact's kind), and who wrote it (a user id or a key id)."""

    __tablename__ = "artifact_versions"
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[OrgRef]
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    content: Mapped[dict[str, Any]] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[CreatedAt]


class UsageRecord(Base):
    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_org_created", "org_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    api_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    outcome: Mapped[str] = mapped_column(String(50))
    # True when the provider reported no usage and the tokens were counted offline.
    estimated: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[CreatedAt]


class Budget(Base):
    """A spending cap in micro-USD (1e-6 USD; integers, so sums are exact) for one org, user or key over a
    period: ``day``, ``month`` (UTC calendar windows) or ``total`` (never resets)."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("org_id", "scope", "subject_id", "period",
                                       name="uq_budgets_org_scope_subject_period"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    scope: Mapped[str] = mapped_column(String(10))  # org, user, key
    subject_id: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(10))  # day, month, total
    limit_micro_usd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetSpend(Base):
    """What a budget has spent and holds reserved in one window (``2026-11-21``, ``2026-11`` or ``total``).
    A reservation is one conditional UPDATE, so concurrent calls cannot together pass the limit."""

    __tablename__ = "budget_spend"
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    window: Mapped[str] = mapped_column(String(16), primary_key=True)
    org_id: Mapped[OrgRef]
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetReservation(Base):
    """Money a running call holds in one budget's window, until it settles or ``expires_at`` passes (a
    process that died mid-call cannot block a budget for longer than that)."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_budget_expires", "budget_id", "expires_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[OrgRef]
    window: Mapped[str] = mapped_column(String(16))
    amount_micro_usd: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[CreatedAt]


class OrgPolicy(Base):
    """Per-organisation guard policy (PII, moderation, injection), set by admins; it overrides the
    configured defaults key by key."""

    __tablename__ = "org_policies"
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only record of security-relevant actions (logins, keys, roles, policies, admin actions).
    Database triggers refuse UPDATE and DELETE. ``org_id`` is a plain column, not a foreign key, so the
    trail outlives a deleted organisation. Never holds a secret: ``accounts/audit.py`` scrubs details."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_org_created", "org_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(50), default=None)
    target_id: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome: Mapped[str] = mapped_column(String(20), default="success")
    details: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[CreatedAt]


class Invitation(Base):
    """An offer of a role in ``org_id`` to whoever holds ``email``. Nothing changes until that user accepts
    (``accepted_at``); an org never adds another org's user by itself. ``status``: pending, accepted,
    declined, revoked."""

    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_email_status", "email", "status"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20), default="member")
    division_id: Mapped[str | None] = mapped_column(ForeignKey("divisions.id", ondelete="CASCADE"), default=None)
    invited_by_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    invited_by_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime] = mapped_column()
    answered_at: Mapped[datetime | None] = mapped_column(default=None)



class AgentThread(Base):
    """A LangGraph thread (the agents API, ``/threads``): its state lives in the checkpointer under its id.
    Owned like a conversation (``user_id``, or ``api_key_id`` for a key that acts as no user);
    ``visibility`` ``private`` (its owner only) or ``org`` (readable by the organisation, written by its
    owner). ``values`` and ``interrupts`` copy the state after the last run, for search and listing."""

    __tablename__ = "agent_threads"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    api_key_id: Mapped[OwnerKey]
    division_id: Mapped[OwnerDivision]
    visibility: Mapped[str] = mapped_column(String(10), default="private")  # private, org
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="idle")  # idle, busy, interrupted, error
    values: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    interrupts: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentRun(Base):
    """One run of an assistant's graph on a thread. ``status``: pending, running, success, error,
    interrupted (the graph waits for input), cancelled. Its output is the thread's state in the
    checkpointer; ``error`` holds ``{code, message}`` of a failed run."""

    __tablename__ = "agent_runs"
    __table_args__ = (Index("ix_agent_runs_thread_created", "thread_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    org_id: Mapped[OrgRef]
    thread_id: Mapped[str] = mapped_column(ForeignKey("agent_threads.id", ondelete="CASCADE"))
    assistant_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    multitask_strategy: Mapped[str] = mapped_column(String(20), default="reject")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDevice(Base):
    """A device its owner (``user_id``, or ``api_key_id`` for a key acting as no user) receives push
    notifications on: a Web Push subscription (``endpoint``, ``p256dh``, ``auth``) or an FCM registration
    token (in ``endpoint``). ``endpoint_hash`` (sha256) finds a re-registered device. See
    ``atrium.notifications``."""

    __tablename__ = "notification_devices"
    __table_args__ = (Index("ix_notification_devices_org_hash", "org_id", "endpoint_hash"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None,
                                                index=True)
    api_key_id: Mapped[OwnerKey]
    kind: Mapped[str] = mapped_column(String(10))  # webpush, fcm
    endpoint: Mapped[str] = mapped_column(Text)
    endpoint_hash: Mapped[str] = mapped_column(String(64))
    p256dh: Mapped[str | None] = mapped_column(String(100), default=None)
    auth: Mapped[str | None] = mapped_column(String(40), default=None)
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[CreatedAt]
    last_delivered_at: Mapped[datetime | None] = mapped_column(default=None)


# Tables holding one tenant's data (``org_id``): scoped in every repository, and under Row-Level Security
# on PostgreSQL.
TENANT_TABLES = ("users", "divisions", "memberships", "api_keys", "refresh_tokens", "conversations", "messages",
                 "documents", "chunks", "jobs", "queries", "usage", "knowledge_revisions", "budgets",
                 "budget_spend", "budget_reservations", "org_policies", "collections", "invitations", "artifacts",
                 "artifact_versions", "changes", "agent_threads", "agent_runs", "projects",
                 "notification_devices")
