"""The guard's settings: the ``guard`` section (every tenant's default guard policy, the moderation
endpoint, per-tenant overrides), ``rate_limits`` and ``budgets``; and ``merged_policy``, which applies a
tenant's overrides to a policy. Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator


class RateLimitSettings(BaseModel):
    """Requests and model tokens per minute per API key, user and organisation (``None``: no limit at that
    scope; a key's own limits, set on the key, replace the ``key_*`` defaults). In process by default; in
    Redis, shared by every replica, when ``redis_url`` is set. See docs/limits-and-budgets.md."""

    enabled: bool = True
    strategy: Literal["sliding_window", "moving_window", "fixed_window"] = "sliding_window"
    key_requests_per_minute: int | None = Field(600, ge=1)
    user_requests_per_minute: int | None = Field(600, ge=1)
    org_requests_per_minute: int | None = Field(6000, ge=1)
    key_tokens_per_minute: int | None = Field(None, ge=1)
    user_tokens_per_minute: int | None = Field(None, ge=1)
    org_tokens_per_minute: int | None = Field(None, ge=1)
    ws_messages_per_minute: int | None = Field(120, ge=1)  # per WebSocket caller (key, else user)
    # When the limits storage (Redis) fails: admit (True, logged and counted in
    # atrium_limits_storage_errors_total) or refuse with 503 (False).
    fail_open: bool = True
    storage_timeout_s: float = Field(0.5, gt=0)  # one Redis round trip, connecting included
    storage_retry_s: float = Field(5.0, ge=0)  # after a storage failure, skip the storage this long


class BudgetSettings(BaseModel):
    """Spending caps (the caps themselves live in the ``budgets`` table, set by admins); see
    docs/limits-and-budgets.md."""

    enabled: bool = True
    # A call's reservation is released by itself after this long if its process died before settling;
    # keep it above gateway.total_timeout_s (a live call never outlasts that).
    reservation_ttl_s: float = Field(900.0, ge=10)
    cache_ttl_s: float = Field(30.0, ge=0)  # how long budget definitions are trusted without a lookup
    # How long the edge check trusts what this process last saw a budget window spend (reservations always
    # check the database).
    spend_cache_ttl_s: float = Field(1.0, ge=0)
    # The offline prompt count (cl100k) times this when reserving: other vendors' tokenizers count more.
    prompt_margin: float = Field(1.25, ge=1.0, le=4.0)


PiiAction = Literal["redact", "route_local", "block", "allow"]
PiiKind = Literal["email", "phone", "card", "iban", "national_id", "ip", "secret"]
InjectionAction = Literal["off", "flag", "strip", "refuse"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card", "iban", "national_id", "ip", "secret")


class PiiPolicySettings(BaseModel):
    """Personal data and secrets in a prompt bound for a model that is not local: replace them with
    placeholders and restore them in the answer (``redact``), serve the call with local models only
    (``route_local``), refuse it (``block``) or let it through (``allow``)."""

    model_config = {"extra": "forbid"}

    action: PiiAction = "redact"
    types: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS))


class ModerationPolicySettings(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = True
    default_blocklist: bool = True  # the short built-in list (guard/moderation.py)
    blocklist: list[str] = Field(default_factory=list, max_length=500)  # whole words/phrases, any case
    patterns: list[str] = Field(default_factory=list, max_length=100)  # regular expressions (config only)
    provider: bool = True  # also ask guard.moderation_provider, when one is configured

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"guard moderation pattern {pattern!r} does not compile: {exc}") from None
        return value


class InjectionPolicySettings(BaseModel):
    """Prompt-injection heuristics: what to do with user input and with retrieved context that score at
    least ``threshold``."""

    model_config = {"extra": "forbid"}

    input: InjectionAction = "flag"
    context: InjectionAction = "strip"
    threshold: float = Field(0.5, gt=0, le=1)


class OutputPolicySettings(BaseModel):
    model_config = {"extra": "forbid"}

    # http(s) links and images in answers must point at one of these domains (or a subdomain); None: any.
    link_domains: list[str] | None = Field(None, max_length=200)


class GuardPolicySettings(BaseModel):
    """One tenant's guard policy. The ``guard`` section holds the defaults; ``guard.tenants.<org_id>``
    (configuration) and the ``org_policies`` table (``PUT /api/v1/admin/policy``) override them key by
    key."""

    model_config = {"extra": "forbid"}

    enabled: bool = True
    pii: PiiPolicySettings = PiiPolicySettings()
    moderation: ModerationPolicySettings = ModerationPolicySettings()
    injection: InjectionPolicySettings = InjectionPolicySettings()
    output: OutputPolicySettings = OutputPolicySettings()


class ModerationProviderSettings(BaseModel):
    """An OpenAI-format moderation endpoint: a ``gateway.providers`` entry (its URL and key), or a
    ``base_url`` with an ``api_key``."""

    model_config = {"extra": "forbid"}

    provider: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "omni-moderation-latest"
    timeout_s: float = Field(5.0, gt=0)
    fail_closed: bool = False  # endpoint unavailable: refuse the call (True) or let it through, logged

    @model_validator(mode="after")
    def _one_target(self) -> ModerationProviderSettings:
        if (self.provider is None) == (self.base_url is None):
            raise ValueError("guard.moderation_provider needs exactly one of provider, base_url")
        return self


class GuardSettings(GuardPolicySettings):
    """Guardrails: moderation, PII, prompt injection, output sanitising; see docs/guardrails.md. The
    policy fields are every tenant's defaults; ``enabled: false`` here removes the guard entirely."""

    moderation_provider: ModerationProviderSettings | None = None
    tenants: dict[str, dict[str, Any]] = {}  # by org id: partial policies, the shape of PUT /api/v1/admin/policy
    policy_cache_ttl_s: float = Field(30.0, ge=0)  # a replica sees another's policy change within this

    @model_validator(mode="after")
    def _tenant_policies_valid(self) -> GuardSettings:
        if not self.tenants:
            return self
        for org_id, override in self.tenants.items():
            try:
                merged_policy(self, override)
            except ValueError as exc:
                raise ValueError(f"guard.tenants.{org_id}: {exc}") from None
        return self


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        merged[key] = deep_merge(current, value) if isinstance(value, Mapping) and isinstance(current, Mapping) \
            else value
    return merged


def merged_policy(defaults: GuardPolicySettings, *overrides: Mapping[str, Any]) -> GuardPolicySettings:
    """``defaults`` with ``overrides`` applied key by key; ``ValueError`` naming what is wrong."""
    data = defaults.model_dump(include=set(GuardPolicySettings.model_fields))
    for override in overrides:
        data = deep_merge(data, override)
    try:
        return GuardPolicySettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ValueError(problems) from None
