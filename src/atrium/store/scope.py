"""What a transaction may see: the ``Scope`` a session carries and sets at the start of each transaction.

On PostgreSQL a scope is a handful of transaction-local settings (``set_config(..., true)``, so nothing
survives in a pooled connection) that the Row-Level Security policies of ``atrium.store.tenancy`` read:
the tenant, the system bypass and, for a principal's scope, who is acting. On SQLite nothing is set and
the repositories' own filters alone scope by tenant. See docs/tenancy.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

TENANT_SETTING = "app.current_org_id"
BYPASS_SETTING = "app.bypass_rls"
USER_SETTING = "app.current_user_id"
KEY_SETTING = "app.current_key_id"
DIVISION_SETTING = "app.current_division_id"
ROLE_SETTING = "app.current_role"

_SCOPE_KEY = "atrium.scope"
_SET_SCOPE = text(f"SELECT set_config('{TENANT_SETTING}', :org_id, true), "
                  f"set_config('{BYPASS_SETTING}', :bypass, true), "
                  f"set_config('{USER_SETTING}', :user_id, true), "
                  f"set_config('{KEY_SETTING}', :key_id, true), "
                  f"set_config('{DIVISION_SETTING}', :division_id, true), "
                  f"set_config('{ROLE_SETTING}', :role, true)")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a transaction may see: one tenant's rows, or (``system``) every tenant's. A scope ``acting``
    for a principal (``role`` set) also narrows, on PostgreSQL, private rows to their owner (``user_id``,
    or ``key_id`` for a key acting as no user) and collections to those the principal may read; a tenant
    scope without a role is the service scope of Atrium's own work for a tenant (answer runs, jobs)."""

    org_id: str | None
    system: bool = False
    user_id: str | None = None
    key_id: str | None = None
    division_id: str | None = None
    role: str | None = None

    @classmethod
    def tenant(cls, org_id: str) -> Scope:
        if not isinstance(org_id, str) or not org_id:
            raise ValueError("a tenant session needs a non-empty org id")
        return cls(org_id=org_id)

    @classmethod
    def acting(cls, org_id: str, *, user_id: str | None, key_id: str | None, division_id: str | None,
               role: str) -> Scope:
        if not role:
            raise ValueError("a principal's scope needs its role")
        return cls(org_id=cls.tenant(org_id).org_id, user_id=user_id, key_id=key_id, division_id=division_id,
                   role=role)

    @classmethod
    def everything(cls) -> Scope:
        return cls(org_id=None, system=True)

    def parameters(self) -> dict[str, str]:
        return {"org_id": self.org_id or "", "bypass": "on" if self.system else "off",
                "user_id": self.user_id or "", "key_id": self.key_id or "", "division_id": self.division_id or "",
                "role": self.role or ""}


class ScopedSession(Session):
    """A Session that sets its ``Scope`` on PostgreSQL at the start of every transaction it begins
    (one extra statement per transaction; nothing on SQLite)."""


@event.listens_for(ScopedSession, "after_begin")
def _apply_scope(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    scope: Scope | None = session.info.get(_SCOPE_KEY)
    if scope is not None and connection.dialect.name == "postgresql":
        connection.execute(_SET_SCOPE, scope.parameters())


def bind_scope(session: AsyncSession, scope: Scope) -> None:
    """Give a session (before its first statement) the scope its transactions start with."""
    session.sync_session.info[_SCOPE_KEY] = scope


async def rescope(session: AsyncSession, org_id: str) -> None:
    """Switch an open transaction to ``org_id``'s scope, e.g. to write the rows of several tenants in one
    transaction, each under its own tenant's policy check."""
    scope = Scope.tenant(org_id)
    bind_scope(session, scope)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_SET_SCOPE, scope.parameters())
