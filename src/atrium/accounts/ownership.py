"""Who owns a tenant object, and who else may see it: the rules every repository applies inside an
organisation (the organisation itself is the ``org_id`` argument, checked before any of this).

* Conversations, query records and jobs are **private** to their owner: the principal's user or, for a key
  that acts as no user, the key itself (``api_key_id``; the anonymous development principal owns as
  ``"anonymous"``, the operator's ``atrium`` commands as ``"cli"``). Another caller, admins included, gets
  ``404``; admins may list their metadata and erase them through the admin routes (``conversations.admin``),
  never read them.
* Collections are readable by the whole organisation (``org``), by one division (``division``: its members
  and the organisation's unscoped admins) or by their owner alone (``private``). Documents, chunks and
  search results follow their collection.

The conditions here are SQL expressions for the repositories (the only check on SQLite). On PostgreSQL the
same rules are Row-Level Security policies reading the session's principal (``principal_scope``), see
``atrium.store.tenancy``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, false, or_
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import Principal
from atrium.store.engine import Database
from atrium.store.models import Collection
from atrium.store.scope import Scope

ANONYMOUS_OWNER = "anonymous"
CLI_OWNER = "cli"  # what the operator makes with ``atrium`` commands (no user, no key)
VISIBILITIES = ("org", "division", "private")
WRITERS = ("owner", "readers")


@dataclass(frozen=True, slots=True)
class Owner:
    """The owner columns of a row: a user, or (no user) a key."""

    user_id: str | None
    api_key_id: str | None

    def columns(self) -> dict[str, str | None]:
        return {"user_id": self.user_id, "api_key_id": self.api_key_id}

    def match(self, model: Any) -> tuple[ColumnElement[bool], ...]:
        """SQL conditions: ``model``'s rows owned by this owner."""
        if self.user_id is not None:
            return (model.user_id == self.user_id,)
        return (model.user_id.is_(None), model.api_key_id == self.api_key_id)


def owner_of(principal: Principal) -> Owner:
    if principal.user_id is not None:
        return Owner(principal.user_id, None)
    if principal.api_key_id is not None:
        return Owner(None, principal.api_key_id)
    return Owner(None, CLI_OWNER if principal.via == "cli" else ANONYMOUS_OWNER)


def owner_columns(principal: Principal) -> dict[str, str | None]:
    return owner_of(principal).columns()


def owned_by(model: Any, principal: Principal) -> ColumnElement[bool]:
    """``model``'s rows owned by ``principal`` (``model`` has ``user_id`` and ``api_key_id``)."""
    return and_(*owner_of(principal).match(model))


def is_owner(row: Any, principal: Principal) -> bool:
    owner = owner_of(principal)
    if owner.user_id is not None:
        return bool(row.user_id == owner.user_id)
    return row.user_id is None and row.api_key_id == owner.api_key_id


def org_admin(principal: Principal) -> bool:
    """An admin over the whole organisation (not narrowed to a division)."""
    return principal.has_role("admin") and principal.division_id is None


def admin_over_division(principal: Principal, division_id: str | None) -> bool:
    """May administer objects of ``division_id`` (``None``: organisation-wide objects)."""
    if not principal.has_role("admin"):
        return False
    return principal.division_id is None or (division_id is not None and principal.division_id == division_id)


def readable_collections(principal: Principal) -> ColumnElement[bool]:
    """The collections ``principal`` may read (search, list documents, cite)."""
    return visible_to(Collection, principal)


def visible_to(model: Any, principal: Principal) -> ColumnElement[bool]:
    """``model``'s rows ``principal`` may read, for a model with a collection's visibility columns
    (``visibility``, ``division_id``, ``user_id``, ``api_key_id``): collections, artifacts."""
    division_rule: ColumnElement[bool]
    if org_admin(principal):
        division_rule = model.visibility == "division"
    elif principal.division_id is not None:
        division_rule = and_(model.visibility == "division", model.division_id == principal.division_id)
    else:
        division_rule = false()
    return or_(model.visibility == "org", division_rule,
               and_(model.visibility == "private", owned_by(model, principal)))


class CollectionAccess(Protocol):
    """What decides who may read a collection: a ``Collection`` row, or a copy of these columns."""

    @property
    def visibility(self) -> str: ...
    @property
    def division_id(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def api_key_id(self) -> str | None: ...


def may_read_collection(collection: CollectionAccess, principal: Principal) -> bool:
    if collection.visibility == "org":
        return True
    if collection.visibility == "division":
        return org_admin(principal) or (principal.division_id is not None
                                        and principal.division_id == collection.division_id)
    return is_owner(collection, principal)


def may_write_collection(collection: Collection, principal: Principal) -> bool:
    """Upload into, delete documents of: its owner, admins over it, or (``writers == "readers"``) any
    reader with the member role."""
    if not principal.has_role("member") or not may_read_collection(collection, principal):
        return False
    if collection.visibility != "private" and (
            org_admin(principal) or (collection.visibility == "division"
                                     and admin_over_division(principal, collection.division_id))):
        return True
    if is_owner(collection, principal):
        return True
    return collection.writers == "readers"


def may_manage_collection(collection: CollectionAccess, principal: Principal) -> bool:
    """Change visibility or writers, delete the collection: its owner or admins over it. Artifacts, shared
    as collections are, are edited, shared and deleted under the same rule."""
    if not may_read_collection(collection, principal) or not principal.has_role("member"):
        return False
    if is_owner(collection, principal):
        return True
    if collection.visibility == "org":
        return org_admin(principal)
    if collection.visibility == "division":
        return admin_over_division(principal, collection.division_id)
    return False


def principal_scope(principal: Principal) -> Scope:
    """The database scope of a request made by ``principal``: its tenant, and on PostgreSQL the owner and
    visibility policies for that principal."""
    owner = owner_of(principal)
    return Scope.acting(principal.org_id, user_id=owner.user_id, key_id=owner.api_key_id,
                        division_id=principal.division_id, role=principal.role)


def principal_session(db: Database, principal: Principal) -> AbstractAsyncContextManager[AsyncSession]:
    """A transaction on behalf of ``principal``: its tenant's rows, and (PostgreSQL) only those it may see."""
    return db.scoped_session(principal_scope(principal))
