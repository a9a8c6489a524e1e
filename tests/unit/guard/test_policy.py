"""Guard policies: defaults, configured tenant overrides and stored overrides merged key by key, and the
API's partial policy validated (no regular expressions from tenants)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError
from sqlalchemy import event

from atrium.guard.policy import PolicyOverride, PolicyStore, merged_policy
from atrium.settings import GuardSettings
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization, OrgPolicy
from atrium.store.pubsub import InProcessPubSub


def test_overrides_apply_key_by_key_later_wins() -> None:
    defaults = GuardSettings(moderation={"blocklist": ["alpha"]})
    policy = merged_policy(defaults, {"pii": {"action": "block"}}, {"moderation": {"provider": False}})
    assert policy.pii.action == "block"
    assert policy.pii.types == GuardSettings().pii.types
    assert policy.moderation.blocklist == ["alpha"] and policy.moderation.provider is False
    assert policy.injection.context == "strip"


def test_an_invalid_merge_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"pii\.action"):
        merged_policy(GuardSettings(), {"pii": {"action": "shred"}})


def test_configured_tenant_overrides_are_checked_when_settings_load() -> None:
    GuardSettings(tenants={"org1": {"injection": {"input": "refuse"}}})
    with pytest.raises(ValidationError, match=r"guard\.tenants\.org1"):
        GuardSettings(tenants={"org1": {"injection": {"inptu": "refuse"}}})


def test_the_api_override_keeps_only_given_keys_and_refuses_patterns() -> None:
    body = PolicyOverride.model_validate({"pii": {"action": "route_local"}, "output": {"link_domains": None}})
    assert body.document() == {"pii": {"action": "route_local"}, "output": {"link_domains": None}}
    with pytest.raises(ValidationError):
        PolicyOverride.model_validate({"moderation": {"patterns": ["(a+)+$"]}})
    with pytest.raises(ValidationError):
        PolicyOverride.model_validate({"output": {"link_domains": ["javascript:alert(1)"]}})
    with pytest.raises(ValidationError):
        PolicyOverride.model_validate({"moderation": {"blocklist": ["x" * 101]}})


async def test_calls_that_find_an_org_policy_uncached_share_one_read(tmp_path: Path) -> None:
    """A stampede guard: when an org's cached policy expires under load, the calls arriving meanwhile
    share one query (each would otherwise wait its turn on the database's thread)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'policy.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    try:
        async with db.system_session() as session:
            session.add(Organization(id="org-a", name="a"))
            await session.flush()
            session.add(OrgPolicy(org_id="org-a", policy={"pii": {"action": "block"}}))
        store = PolicyStore(GuardSettings(), db, InProcessPubSub())
        statements: list[str] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        policies = await asyncio.gather(*(store.for_org("org-a") for _ in range(30)))
        assert {p.pii.action for p in policies} == {"block"}
        assert len([s for s in statements if "org_policies" in s]) == 1, statements
    finally:
        await db.dispose()
