"""SQLAlchemy 2 models: the durable truth of Atrium. Every tenant table carries ``org_id``.

One module per room's tables (``accounts``, ``content``, ``metering``, ``agents``) over ``base`` (the
declarative base and the shared column types); every model is importable from here, and importing this
package registers every table on ``Base.metadata`` (what Alembic and the tests read).
"""

from __future__ import annotations

# ruff: noqa: I001  (the re-exports wrapped, not one name a line)

from atrium.store.models.accounts import (ApiKey, AuditEvent, Division, Invitation, Membership, NotificationDevice,
                                          Organization, OrgPolicy, RefreshToken, User)
from atrium.store.models.agents import AgentRun, AgentThread
from atrium.store.models.base import (NAMING, Base, BigId, CreatedAt, OrgRef, OwnerDivision, OwnerKey, OwnerUser, RowId,
                                      new_id, utcnow)
from atrium.store.models.content import (Artifact, ArtifactVersion, Change, Chunk, Collection, Conversation, Document,
                                         EmbeddingCacheEntry, Job, KnowledgeRevision, Message, Project, QueryRecord)
from atrium.store.models.metering import Budget, BudgetReservation, BudgetSpend, UsageRecord, UsageReset
from atrium.store.models.webhooks import Webhook

# Tables holding one tenant's data (``org_id``): scoped in every repository, and under Row-Level Security
# on PostgreSQL.
TENANT_TABLES = ("users", "divisions", "memberships", "api_keys", "refresh_tokens", "conversations", "messages",
                 "documents", "chunks", "jobs", "queries", "usage", "knowledge_revisions", "budgets",
                 "budget_spend", "budget_reservations", "org_policies", "collections", "invitations", "artifacts",
                 "artifact_versions", "changes", "agent_threads", "agent_runs", "projects",
                 "notification_devices", "webhooks", "usage_resets", "embedding_cache")

__all__ = [
    "NAMING",
    "TENANT_TABLES",
    "AgentRun",
    "AgentThread",
    "ApiKey",
    "Artifact",
    "ArtifactVersion",
    "AuditEvent",
    "Base",
    "BigId",
    "Budget",
    "BudgetReservation",
    "BudgetSpend",
    "Change",
    "Chunk",
    "Collection",
    "Conversation",
    "CreatedAt",
    "Division",
    "Document",
    "EmbeddingCacheEntry",
    "Invitation",
    "Job",
    "KnowledgeRevision",
    "Membership",
    "Message",
    "NotificationDevice",
    "OrgPolicy",
    "OrgRef",
    "Organization",
    "OwnerDivision",
    "OwnerKey",
    "OwnerUser",
    "Project",
    "QueryRecord",
    "RefreshToken",
    "RowId",
    "UsageRecord",
    "UsageReset",
    "User",
    "Webhook",
    "new_id",
    "utcnow",
]
