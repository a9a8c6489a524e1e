"""The collection directory answers from memory what the database would answer: for every principal, the same
collections as the SQL rules of ``atrium.accounts.ownership``; kept until forgotten; an organisation too large
to keep is asked in SQL each time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.errors import NotFound
from atrium.knowledge import directory as directory_module
from atrium.knowledge.collections import searchable
from atrium.knowledge.directory import CollectionDirectory
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Collection, Organization, new_id, utcnow

ORG = "org-1"
PRINCIPALS = [
    Principal(ORG, "u-owner", "owner"),
    Principal(ORG, "u-admin", "admin"),
    Principal(ORG, "u-d1-admin", "admin", division_id="d1"),
    Principal(ORG, "u-member", "member"),
    Principal(ORG, "u-d1", "member", division_id="d1"),
    Principal(ORG, "u-d2", "viewer", division_id="d2"),
    Principal(ORG, None, "member", api_key_id="k-1"),
    Principal(ORG, None, "member", api_key_id="k-1", division_id="d2"),
]
ROWS = [  # name, visibility, division, owner user, owner key
    ("handbook", "org", None, None, None),
    ("d1-plans", "division", "d1", "u-d1", None),
    ("d2-plans", "division", "d2", None, "k-1"),
    ("orphan-division", "division", None, "u-admin", None),
    ("member-diary", "private", None, "u-member", None),
    ("d1-diary", "private", "d1", "u-d1", None),
    ("key-notes", "private", None, None, "k-1"),
]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    database = Database(build_engine(url))
    async with database.system_session() as session:
        session.add(Organization(id=ORG, name="Org"))
        await session.flush()
        await session.execute(insert(Collection), [
            {"id": new_id(), "org_id": ORG, "name": name, "visibility": visibility, "writers": "readers",
             "division_id": division, "user_id": user, "api_key_id": key, "created_at": utcnow()}
            for name, visibility, division, user, key in ROWS])
    yield database
    await database.dispose()


async def _sql(db: Database, principal: Principal) -> list[str]:
    async with principal_session(db, principal) as session:
        return sorted(await searchable(session, principal, None))


async def test_every_principal_gets_what_the_sql_rules_give(db: Database) -> None:
    directory = CollectionDirectory(db, ttl_s=60)
    for principal in PRINCIPALS:
        assert sorted(await directory.searchable(principal, None)) == await _sql(db, principal), principal
    member = PRINCIPALS[3]
    assert sorted(await directory.searchable(member, None)) == ["handbook", "member-diary"]
    assert await directory.searchable(member, ["member-diary"]) == ["member-diary"]
    with pytest.raises(NotFound):
        await directory.searchable(member, ["d1-plans"])


async def test_kept_until_forgotten_and_a_named_new_collection_is_read_again(db: Database) -> None:
    directory = CollectionDirectory(db, ttl_s=60)
    member = PRINCIPALS[3]
    assert "handbook" in await directory.searchable(member, None)
    async with db.system_session() as session:
        await session.execute(Collection.__table__.update().where(Collection.name == "handbook")
                              .values(visibility="private", user_id="u-owner"))
        await session.execute(insert(Collection).values(id=new_id(), org_id=ORG, name="fresh", visibility="org",
                                                        writers="readers", created_at=utcnow()))
    assert "handbook" in await directory.searchable(member, None)  # kept: nobody announced the change
    assert await directory.searchable(member, ["fresh"]) == ["fresh"]  # not kept yet: read again
    directory.forget(ORG)
    assert "handbook" not in await directory.searchable(member, None)


async def test_a_large_organisation_is_filtered_in_sql(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory_module, "_LARGE", 3)
    directory = CollectionDirectory(db, ttl_s=60)
    for principal in PRINCIPALS:
        assert sorted(await directory.searchable(principal, None)) == await _sql(db, principal), principal
    with pytest.raises(NotFound):
        await directory.searchable(PRINCIPALS[3], ["key-notes"])
