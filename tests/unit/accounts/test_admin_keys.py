"""API keys: settings, listing (never a secret), revocation, rotation, and what the audit trail keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from atrium.accounts.admin import KeySpec, UserChanges
from atrium.accounts.admin_views import key_view
from atrium.accounts.api_keys import hash_key
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.models import ApiKey, UsageRecord
from tests.unit.accounts.admin_helpers import World, every_value, world

__all__ = ["world"]


async def test_a_key_keeps_its_settings_and_only_its_hash(world: World) -> None:
    expires = datetime.now(UTC) + timedelta(days=7)
    async with world.acting(world.owner) as admin:
        division = await admin.create_division(world.org_id, "Ops")
        bot = await admin.create_service_account(world.org_id, name="deployer", role="member")
        created = await admin.create_key(world.org_id, KeySpec(
            name="deploys", user_id=bot.user.id, service_account=True, division_id=division.id, expires_at=expires,
            requests_per_minute=30, tokens_per_minute=5000))
    async with world.db.system_session() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == created.row.id))
    assert row is not None
    assert (row.user_id, row.division_id, row.role, row.requests_per_minute, row.tokens_per_minute) == (
        bot.user.id, division.id, "member", 30, 5000)
    assert row.expires_at is not None and abs(row.expires_at.replace(tzinfo=UTC) - expires) < timedelta(seconds=1)
    assert row.key_hash == hash_key(created.raw) and created.raw.startswith(row.prefix)
    view = key_view(row)
    assert created.raw not in str(view) and row.key_hash not in str(view)


async def test_key_requests_are_checked(world: World) -> None:
    member = await world.person("member")
    async with world.acting(world.owner) as admin:
        bot_user = await admin.create_user(world.org_id, email="human@example.org", name="H", role="member")
    for spec, error in (
        (KeySpec(name="past", expires_at=datetime.now(UTC) - timedelta(minutes=1)), InvalidRequest),
        (KeySpec(name="far", expires_at=datetime.now(UTC) + timedelta(days=4000)), InvalidRequest),
        (KeySpec(name="not a bot", user_id=bot_user.user.id, service_account=True), NotFound),
    ):
        with pytest.raises(error):
            async with world.acting(world.owner) as admin:
                await admin.create_key(world.org_id, spec)
    async with world.acting(world.owner) as admin:
        assert member.user_id is not None
        await admin.update_user(world.org_id, member.user_id, UserChanges(disabled=True))
    with pytest.raises(Conflict, match="disabled"):
        async with world.acting(world.owner) as admin:
            await admin.create_key(world.org_id, KeySpec(name="for a disabled user", user_id=member.user_id))


async def test_revoke_is_idempotent_and_announced_once(world: World) -> None:
    async with world.acting(world.owner) as admin:
        created = await admin.create_key(world.org_id, KeySpec(name="short-lived"))
    async with world.acting(world.owner) as admin:
        revoked = await admin.revoke_key(world.org_id, created.row.id)
        assert revoked.revoked_at is not None and admin.stale_keys == [created.row.id]
    async with world.acting(world.owner) as admin:
        await admin.revoke_key(world.org_id, created.row.id)
        assert admin.stale_keys == []
        active = await admin.list_keys(world.org_id, include_revoked=False, limit=50, offset=0)
        every = await admin.list_keys(world.org_id, include_revoked=True, limit=50, offset=0)
    assert created.row.id not in {key.id for key, _ in active.items}
    assert created.row.id in {key.id for key, _ in every.items}
    assert (await world.actions()).count("key.revoke") == 1


async def test_an_admin_cannot_revoke_or_rotate_an_owner_key(world: World) -> None:
    admin_actor = await world.person("admin")
    async with world.acting(world.owner) as admin:
        owner_key = await admin.create_key(world.org_id, KeySpec(name="owner's"))
    assert owner_key.row.role == "owner"
    for attempt in (lambda a: a.revoke_key(world.org_id, owner_key.row.id),
                    lambda a: a.rotate_key(world.org_id, owner_key.row.id)):
        with pytest.raises(Forbidden):
            async with world.acting(admin_actor) as admin:
                await attempt(admin)


async def test_rotation_replaces_a_key_with_the_same_settings(world: World) -> None:
    async with world.acting(world.owner) as admin:
        division = await admin.create_division(world.org_id, "Ops")
        old = await admin.create_key(world.org_id, KeySpec(
            name="ci", role="member", division_id=division.id, requests_per_minute=7, tokens_per_minute=70,
            expires_at=datetime.now(UTC) + timedelta(days=30)))
    async with world.acting(world.owner) as admin:
        new = await admin.rotate_key(world.org_id, old.row.id)
        assert admin.stale_keys == [old.row.id]
    assert new.raw != old.raw and new.row.id != old.row.id
    for field in ("name", "role", "user_id", "division_id", "requests_per_minute", "tokens_per_minute"):
        assert getattr(new.row, field) == getattr(old.row, field), field
    assert new.row.expires_at is not None
    assert abs((new.row.expires_at - datetime.now(UTC)) - timedelta(days=30)) < timedelta(minutes=1)
    with pytest.raises(Conflict):
        async with world.acting(world.owner) as admin:
            await admin.rotate_key(world.org_id, old.row.id)
    rotation = [e for e in await world.audit() if e.action == "key.rotate"]
    assert len(rotation) == 1 and rotation[0].target_id == new.row.id
    assert rotation[0].details is not None and rotation[0].details["replaces"] == old.row.id


async def test_last_used_comes_from_the_usage_records(world: World) -> None:
    async with world.acting(world.owner) as admin:
        used = await admin.create_key(world.org_id, KeySpec(name="used"))
        idle = await admin.create_key(world.org_id, KeySpec(name="idle"))
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with world.db.system_session() as session:
        for minutes in (0, 5):
            session.add(UsageRecord(org_id=world.org_id, api_key_id=used.row.id, provider="fake", model="m",
                                    endpoint="chat", outcome="ok", created_at=moment + timedelta(minutes=minutes)))
    async with world.acting(world.owner) as admin:
        page = await admin.list_keys(world.org_id, include_revoked=False, limit=50, offset=0)
    last = {key.id: when for key, when in page.items}
    assert last[idle.row.id] is None
    latest = last[used.row.id]
    assert latest is not None and latest.replace(tzinfo=UTC) == moment + timedelta(minutes=5)


async def test_audit_rows_hold_the_key_id_and_prefix_never_the_key(world: World) -> None:
    raws = []
    async with world.acting(world.owner) as admin:
        created = await admin.create_key(world.org_id, KeySpec(name="audited"))
        raws.append(created.raw)
    async with world.acting(world.owner) as admin:
        rotated = await admin.rotate_key(world.org_id, created.row.id)
        raws.append(rotated.raw)
    async with world.acting(world.owner) as admin:
        await admin.revoke_key(world.org_id, rotated.row.id)
    events = await world.audit(world.org_id)
    by_action = {e.action: e for e in events}
    assert {"key.create", "key.rotate", "key.revoke"} <= set(by_action)
    create = by_action["key.create"]
    assert create.target_id == created.row.id and create.ip == "192.0.2.1"
    assert create.details is not None
    assert create.details["prefix"] == created.row.prefix.removeprefix("atr_")
    assert create.actor_user_id == world.owner.user_id and create.actor_key_id == world.owner.api_key_id
    for event in events:
        text = every_value(event)
        for raw in raws:
            assert raw not in text and raw[4:] not in text and hash_key(raw) not in text
