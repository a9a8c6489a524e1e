"""``GET|PUT /api/v1/admin/policy``: the organisation's guard policy."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from atrium.guard.policy import policy_view
from atrium.guard.settings import GuardPolicySettings
from atrium.http.schemas.common import View


class PolicyView(View):
    org_id: str
    enabled: bool = Field(description="Whether the guard runs at all (`guard.enabled`).")
    policy: GuardPolicySettings = Field(description="The effective policy: the configured one with the "
                                                    "organisation's overrides applied.")
    overrides: dict[str, Any] = Field(description="The organisation's stored overrides (only the keys set).")
    configured: GuardPolicySettings = Field(description="The configured policy the overrides apply to.")

    @classmethod
    def of(cls, org_id: str, *, enabled: bool, policy: GuardPolicySettings, overrides: dict[str, Any],
           configured: GuardPolicySettings) -> PolicyView:
        return cls.model_validate({"org_id": org_id, "enabled": enabled, "policy": policy_view(policy),
                                   "overrides": overrides, "configured": policy_view(configured)})
