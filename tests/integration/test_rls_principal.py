"""The ``principal_access`` policies on real PostgreSQL, asked through raw SQL with no owner or visibility
filter, as the application's normal role: in a principal's scope (``principal_scope``) the database itself
shows only that principal's own conversations, messages, queries and jobs, and only the collections (and
their documents and chunks) it may read; it refuses to write a row into another owner's name and changes
none of theirs. The application's own filters are not involved, so this shows the policies hold on their
own (``tests/api/test_authz_matrix.py`` shows the routes on top of them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from atrium.accounts.ownership import principal_scope
from atrium.accounts.principal import Principal, Role
from atrium.container import migrate
from atrium.errors import Conflict
from atrium.knowledge import collections as collections_repo
from atrium.store.engine import Database, build_engine
from atrium.store.models import (
    Artifact,
    ArtifactVersion,
    Chunk,
    Collection,
    Conversation,
    Division,
    Document,
    Job,
    Membership,
    Message,
    Organization,
    QueryRecord,
    User,
    Webhook,
)
from tests.conftest import make_settings
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

pytestmark = pytest.mark.integration

ORG_A, ORG_B = "a" * 32, "b" * 32
KEY = "k" * 32  # a key that acts as no user
# Owners of private rows: a user of A (by name), or the key.
OWNERS = ("member", "colleague", "d1_user", "key")
# Collections of A: name -> (visibility, division, owner).
COLLECTIONS: dict[str, tuple[str, str | None, str | None]] = {
    "org-docs": ("org", None, "member"),
    "d1-docs": ("division", "D1", "d1_user"),
    "d2-docs": ("division", "D2", None),
    "member-private": ("private", None, "member"),
    "colleague-private": ("private", None, "colleague"),
    "key-private": ("private", None, "key"),
}
# The principals asking: user (name or None), role, division; and what each must see.
PRINCIPALS: dict[str, tuple[str | None, Role, str | None]] = {
    "member": ("member", "member", None),
    "colleague": ("colleague", "member", None),
    "d1_user": ("d1_user", "member", "D1"),
    "key": (None, "member", None),
    "admin": ("admin", "admin", None),
    "d1_admin": ("d1_admin", "admin", "D1"),
    "viewer": ("viewer", "viewer", None),
}
READABLE = {
    "member": {"org-docs", "member-private"},
    "colleague": {"org-docs", "colleague-private"},
    "d1_user": {"org-docs", "d1-docs"},
    "key": {"org-docs", "key-private"},
    "admin": {"org-docs", "d1-docs", "d2-docs"},  # unscoped admins read every division, no one's private
    "d1_admin": {"org-docs", "d1-docs"},
    "viewer": {"org-docs"},
}
# Per table: the SQL that lists the labels of the visible rows, with no filter at all.
LABELS = {
    "conversations": "SELECT title FROM conversations",
    "messages": "SELECT content FROM messages",
    "queries": "SELECT question FROM queries",
    "jobs": "SELECT kind FROM jobs",
    "collections": "SELECT name FROM collections",
    "documents": "SELECT source FROM documents",
    "chunks": "SELECT text FROM chunks",
    "artifacts": "SELECT title FROM artifacts",
    "artifact_versions": "SELECT title FROM artifact_versions",
    "webhooks": "SELECT description FROM webhooks",
}


@dataclass
class World:
    owner: Database  # the superuser: seeding
    app: Database  # the application's normal role, under RLS
    users: dict[str, str]  # name -> user id
    divisions: dict[str, str]

    def principal(self, name: str) -> Principal:
        user, role, division = PRINCIPALS[name]
        return Principal(org_id=ORG_A, user_id=self.users[user] if user else None, role=role,
                         api_key_id=KEY if user is None else None,
                         division_id=self.divisions[division] if division else None)

    def owner_columns(self, owner: str | None) -> dict[str, str | None]:
        if owner is None:
            return {"user_id": None, "api_key_id": None}
        if owner == "key":
            return {"user_id": None, "api_key_id": KEY}
        return {"user_id": self.users[owner], "api_key_id": None}


async def _seed(owner: Database) -> World:
    async with owner.system_session() as session:
        session.add_all([Organization(id=ORG_A, name="A"), Organization(id=ORG_B, name="B")])
        await session.flush()
        divisions = {name: Division(org_id=ORG_A, name=name) for name in ("D1", "D2")}
        session.add_all(divisions.values())
        await session.flush()
        division_ids = {name: division.id for name, division in divisions.items()}
        users: dict[str, str] = {}
        for name in ("member", "colleague", "d1_user", "admin", "d1_admin", "viewer", "b_user"):
            org = ORG_B if name == "b_user" else ORG_A
            user = User(org_id=org, email=f"{name}@{org[0]}.example", role="member")
            session.add(user)
            await session.flush()
            division = division_ids["D1"] if name in ("d1_user", "d1_admin") else None
            session.add(Membership(org_id=org, user_id=user.id, role="member", division_id=division))
            users[name] = user.id
        world = World(owner=owner, app=owner, users=users, divisions=division_ids)
        for label in OWNERS:
            columns = world.owner_columns(label)
            division = division_ids["D1"] if label == "d1_user" else None
            conversation = Conversation(org_id=ORG_A, title=f"conv-{label}", division_id=division, **columns)
            session.add(conversation)
            await session.flush()
            session.add_all([
                Message(org_id=ORG_A, conversation_id=conversation.id, role="user", content=f"message-{label}"),
                QueryRecord(org_id=ORG_A, question=f"query-{label}", division_id=division, **columns),
                Job(org_id=ORG_A, kind=f"job-{label}", **columns),
            ])
        for name, (visibility, division, owner_label) in COLLECTIONS.items():
            session.add(Collection(org_id=ORG_A, name=name, visibility=visibility,
                                   division_id=division_ids[division] if division else None,
                                   **world.owner_columns(owner_label)))
            document = Document(org_id=ORG_A, collection=name, source=name, content_hash=name[:1] * 64)
            session.add(document)
            await session.flush()
            session.add(Chunk(org_id=ORG_A, document_id=document.id, collection=name, ordinal=0, text=name,
                              embedding=b"\0" * 32))
            # An artifact shared like this collection (the same rules), with one version.
            artifact = Artifact(org_id=ORG_A, kind="markdown", title=name, visibility=visibility,
                                division_id=division_ids[division] if division else None,
                                **world.owner_columns(owner_label))
            session.add(artifact)
            await session.flush()
            session.add(ArtifactVersion(artifact_id=artifact.id, number=1, org_id=ORG_A, title=name,
                                        content={"text": name}))
        # Tenant B: rows no principal of A may see, whatever the owner columns say.
        b_conversation = Conversation(org_id=ORG_B, user_id=users["member"], title="conv-b")
        session.add_all([b_conversation, Collection(org_id=ORG_B, name="org-docs", visibility="org")])
        await session.flush()
        session.add(Message(org_id=ORG_B, conversation_id=b_conversation.id, role="user", content="message-b"))
        # Webhooks: an organisation-wide setting, seen only by unscoped admins (and owners) of their organisation.
        session.add_all([Webhook(org_id=org, user_id=users[maker], url="https://hooks.example/x", events=["job.failed"],
                                 description=f"hook-{org[0]}", secret="whsec_c2VjcmV0", failures=0)
                         for org, maker in ((ORG_A, "admin"), (ORG_B, "b_user"))])
    return world


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> AsyncIterator[World]:
    urls = await database_with_app_role(postgres)
    data_dir: Path = tmp_path_factory.mktemp("rls-principal")
    settings = make_settings(data_dir / "data", database_url=urls.app_url, migration_database_url=urls.owner_url)
    await migrate(settings)
    owner, app = Database(build_engine(urls.owner_url)), Database(build_engine(urls.app_url))
    try:
        world = await _seed(owner)
        world.app = app
        yield world
    finally:
        await app.dispose()
        await owner.dispose()


async def _visible(world: World, name: str) -> dict[str, set[str]]:
    """Per table, the labels of the rows ``name``'s scope shows to a query with no filter."""
    async with world.app.scoped_session(principal_scope(world.principal(name))) as session:
        return {table: {str(label) for label in await session.scalars(text(sql))} for table, sql in LABELS.items()}


def _expected(name: str) -> dict[str, set[str]]:
    own = {"member": "member", "colleague": "colleague", "d1_user": "d1_user", "key": "key"}.get(name)
    readable = READABLE[name]
    return {
        "conversations": {f"conv-{own}"} if own else set(),
        "messages": {f"message-{own}"} if own else set(),
        "queries": {f"query-{own}"} if own else set(),
        "jobs": {f"job-{own}"} if own else set(),
        "collections": readable,
        "documents": readable,
        "chunks": readable,
        "artifacts": readable,
        "artifact_versions": readable,
        "webhooks": {"hook-a"} if name == "admin" else set(),  # not a division admin, nor any member
    }


@pytest.mark.parametrize("name", list(PRINCIPALS))
async def test_a_principal_sees_only_its_own_and_readable_rows(world: World, name: str) -> None:
    assert await _visible(world, name) == _expected(name)


async def test_the_service_scope_sees_the_whole_tenant(world: World) -> None:
    """Atrium's own work for a tenant (answer runs, jobs) is not narrowed to a principal: every row of A,
    none of B."""
    async with world.app.tenant_session(ORG_A) as session:
        seen = {table: {str(label) for label in await session.scalars(text(sql))} for table, sql in LABELS.items()}
    assert seen["conversations"] == {f"conv-{owner}" for owner in OWNERS}
    assert seen["messages"] == {f"message-{owner}" for owner in OWNERS}
    assert seen["collections"] == seen["documents"] == seen["chunks"] == set(COLLECTIONS)
    assert seen["artifacts"] == seen["artifact_versions"] == set(COLLECTIONS)
    assert seen["webhooks"] == {"hook-a"}


async def test_a_principal_cannot_write_in_another_owners_name(world: World) -> None:
    member = principal_scope(world.principal("member"))
    colleague = world.users["colleague"]
    forged = [
        ("INSERT INTO conversations (id, org_id, user_id, title, created_at, updated_at) "
         f"VALUES ('forged1', '{ORG_A}', '{colleague}', 'forged', now(), now())"),
        (f"INSERT INTO queries (id, org_id, user_id, question, status, created_at) "
         f"VALUES ('forged2', '{ORG_A}', '{colleague}', 'forged', 'pending', now())"),
        ("INSERT INTO collections (id, org_id, name, visibility, writers, user_id, created_at) "
         f"VALUES ('forged3', '{ORG_A}', 'forged', 'private', 'owner', '{colleague}', now())"),
        ("INSERT INTO collections (id, org_id, name, visibility, writers, division_id, created_at) "
         f"VALUES ('forged4', '{ORG_A}', 'forged-d2', 'division', 'readers', '{world.divisions['D2']}', now())"),
        ("INSERT INTO artifacts (id, org_id, user_id, visibility, kind, title, description, current_version, "
         f"created_at, updated_at) VALUES ('forged5', '{ORG_A}', '{colleague}', 'private', 'markdown', 'forged', "
         "'', 1, now(), now())"),
        ("INSERT INTO webhooks (id, org_id, url, events, secret, created_at, failures) "
         f"VALUES ('forged6', '{ORG_A}', 'https://evil.example/', '[]', 'whsec_x', now(), 0)"),
        # Taking over one's own conversation for someone else.
        f"UPDATE conversations SET user_id = '{colleague}'",
    ]
    for statement in forged:
        with pytest.raises(DBAPIError, match="row-level security"):
            async with world.app.scoped_session(member) as session:
                await session.execute(text(statement))


async def test_a_principal_changes_and_deletes_none_of_the_rows_it_cannot_see(world: World) -> None:
    member = principal_scope(world.principal("member"))
    async with world.app.scoped_session(member) as session:
        for table, visible in (("conversations", 1), ("messages", 1), ("queries", 1), ("jobs", 1),
                               ("collections", 2), ("documents", 2), ("chunks", 2), ("artifacts", 2),
                               ("artifact_versions", 2), ("webhooks", 0)):
            updated = await session.execute(text(f"UPDATE {table} SET org_id = org_id"))
            assert updated.rowcount == visible, table  # type: ignore[attr-defined]
        gone = await session.execute(text("DELETE FROM documents WHERE source = 'colleague-private'"))
        assert gone.rowcount == 0  # type: ignore[attr-defined]
        gone = await session.execute(text("DELETE FROM conversations WHERE title = 'conv-colleague'"))
        assert gone.rowcount == 0  # type: ignore[attr-defined]
    async with world.owner.system_session() as session:
        left = set(await session.scalars(text("SELECT title FROM conversations WHERE org_id = :a"), {"a": ORG_A}))
        sources = set(await session.scalars(text("SELECT source FROM documents WHERE org_id = :a"), {"a": ORG_A}))
    assert left == {f"conv-{owner}" for owner in OWNERS} and sources == set(COLLECTIONS)


async def test_uploads_make_a_collection_once_and_never_into_one_the_uploader_cannot_see(world: World) -> None:
    """``for_upload`` on PostgreSQL under RLS: a name taken by a collection the caller may not read (invisible
    in its scope) is a conflict; first uploads at once by two members into a new name all go into the one
    collection the first of them made."""
    async def for_upload(name: str, principal: str) -> str:
        async with world.app.scoped_session(principal_scope(world.principal(principal))) as session:
            return (await collections_repo.for_upload(session, world.principal(principal), name)).id

    with pytest.raises(Conflict, match="not shared with you"):
        await for_upload("colleague-private", "member")
    try:
        made = await asyncio.gather(*(for_upload("shared-new", name) for name in ("member", "colleague") * 3))
        assert len(set(made)) == 1
    finally:
        async with world.owner.system_session() as session:
            await session.execute(text("DELETE FROM collections WHERE name = 'shared-new'"))
