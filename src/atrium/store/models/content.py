"""What tenants make: conversations and their messages, the sync change log, collections, documents and
their chunks (embeddings as raw float32 bytes, so the vector index can always be rebuilt from the database),
jobs, queries, artifacts with their versions, and project records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.models.base import Base, BigId, CreatedAt, OrgRef, OwnerDivision, OwnerKey, OwnerUser, RowId, utcnow


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
    # The model its vectors were made with (knowledge/reembed.py); null before its first chunks.
    embedding_model: Mapped[str | None] = mapped_column(String(200), default=None)
    embedding_dimensions: Mapped[int | None] = mapped_column(Integer, default=None)
    # The reranking model its chunks' ``rerank_embedding`` were made with (knowledge/rerank.py); null: none.
    rerank_model: Mapped[str | None] = mapped_column(String(200), default=None)


class Document(Base):
    """Belongs to a collection (whose visibility it has); ``user_id`` / ``api_key_id`` name who uploaded it."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_org_collection", "org_id", "collection"),
                      Index("ix_documents_org_file_type", "org_id", "file_type"))
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
    # pdf, html, md, txt, docx, csv (empty when unknown): what the ``type`` search filter matches
    file_type: Mapped[str] = mapped_column(String(10), default="", server_default="")
    created_at: Mapped[CreatedAt]


class Chunk(Base):
    __tablename__ = "chunks"
    # ix_chunks_id_org_collection: SQLite keyword search checks each match's tenant and collection through it.
    __table_args__ = (Index("ix_chunks_org_collection", "org_id", "collection"),
                      Index("ix_chunks_id_org_collection", "id", "org_id", "collection"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    collection: Mapped[str] = mapped_column(String(100))
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(String(1000), default="")
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    page: Mapped[int | None] = mapped_column(Integer, default=None)  # the PDF page; null when not paged
    # The reranking model's vector (float32 bytes), stored while the reranker is on (knowledge/rerank.py).
    rerank_embedding: Mapped[bytes | None] = mapped_column(LargeBinary, default=None, deferred=True)


class EmbeddingCacheEntry(Base):
    """A tenant's embedding of one text by one model (``knowledge/embedders/cache.py``): ``model`` is the
    fingerprint of the model and the settings that shape its vectors, ``text_hash`` the text's sha256."""

    __tablename__ = "embedding_cache"
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(32), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[CreatedAt]


class KnowledgeRevision(Base):
    """Bumped in the same transaction as every chunk change, so index holders know to reconcile."""

    __tablename__ = "knowledge_revisions"
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class Job(Base):
    """Private to who queued it (``user_id``, or ``api_key_id`` for a key acting as no user). A running job is
    held by one worker (``lease_owner``) until ``lease_expires_at``, renewed while it runs; a job waiting for
    a retry is not taken before ``run_after``; ``idempotency_key`` is unique per organisation."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),
                      Index("uq_jobs_org_idempotency_key", "org_id", "idempotency_key", unique=True))
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    api_key_id: Mapped[OwnerKey]
    kind: Mapped[str] = mapped_column(String(50))
    # queued, running, succeeded, failed, cancelled
    status: Mapped[str] = mapped_column(String(20), default="queued")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    run_after: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)


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
