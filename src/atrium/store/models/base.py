"""The declarative base and the column types the tables share (ids, the tenant reference, owners, times)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, mapped_column

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
