"""Guard policies: defaults, configured tenant overrides and stored overrides merged key by key, and the
API's partial policy validated (no regular expressions from tenants)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atrium.guard.policy import PolicyOverride, merged_policy
from atrium.settings import GuardSettings


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
