"""The ``database`` section. (Where the database is, ``database_url``, stays at the top level of
``Settings``.) Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DatabaseSettings(BaseModel):
    """Tenant isolation in PostgreSQL (see docs/tenancy.md). At start-up the application checks that its
    role is subject to Row-Level Security and that every tenant table has it: a warning by default,
    a refusal to start with ``require_rls``."""

    require_rls: bool = False
    # How long a request waits for a free database connection before it is refused with a typed 503
    # ``overloaded`` (and ``Retry-After``): past it, the server has more work than it can take.
    pool_timeout_s: float = Field(30.0, gt=0, le=300)
