"""Guard policy per tenant, and the ``Guard`` that applies it outside the gateway.

A tenant's effective policy is built key by key, later winning:

1. the ``guard`` section of the settings (every tenant's defaults);
2. ``guard.tenants.<org_id>`` in the configuration (operators);
3. the tenant's row in ``org_policies`` (its admins, through ``PUT /api/v1/admin/policy``).

Effective policies are cached in process for ``guard.policy_cache_ttl_s``; a change drops the entry here
at once and, through the PubSub channel ``policy.changed``, on every other replica (a missed message only
delays the change until the entry expires).

``Guard`` bundles the store, the moderator and the guard metrics, with the checks the pipeline's stages
are made of (the injection policy on one text, moderation, counting a decision); the stages themselves,
and where they apply, are in ``atrium.guard.pipeline``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import anyio
from cachetools import TTLCache
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from atrium.accounts import audit
from atrium.accounts.principal import Principal
from atrium.errors import ContentBlocked
from atrium.guard.injection import CONTEXT_WARNING, scan, strip_markers, strip_offending
from atrium.guard.moderation import ModerationUnavailable, Moderator
from atrium.guard.pii import Redaction
from atrium.guard.settings import (
    GuardPolicySettings,
    GuardSettings,
    InjectionAction,
    PiiAction,
    PiiKind,
    merged_policy,
)
from atrium.store.engine import Database
from atrium.store.models import OrgPolicy, utcnow
from atrium.store.ports import PubSub, follow
from atrium.store.single_flight import SingleFlight
from atrium.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

CHANNEL = "policy.changed"

# --- the API's partial policy --------------------------------------------------------------------------

Term = Annotated[str, Field(min_length=1, max_length=100)]
Domain = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^\.?[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?$")]


class _Partial(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PiiOverride(_Partial):
    action: PiiAction | None = None
    types: list[PiiKind] | None = Field(None, max_length=7)


class ModerationOverride(_Partial):
    """No ``patterns`` here: regular expressions are for operators (a tenant's could run without end)."""

    enabled: bool | None = None
    default_blocklist: bool | None = None
    blocklist: list[Term] | None = Field(None, max_length=200)
    provider: bool | None = None


class InjectionOverride(_Partial):
    input: InjectionAction | None = None
    context: InjectionAction | None = None
    threshold: float | None = Field(None, gt=0, le=1)


class OutputOverride(_Partial):
    link_domains: list[Domain] | None = Field(None, max_length=200)


class PolicyOverride(_Partial):
    """A tenant's overrides of the configured guard policy (the body of ``PUT /api/v1/admin/policy``):
    only the keys given change; ``{}`` goes back to the configured policy."""

    enabled: bool | None = None
    pii: PiiOverride | None = None
    moderation: ModerationOverride | None = None
    injection: InjectionOverride | None = None
    output: OutputOverride | None = None

    def document(self) -> dict[str, Any]:
        """What is stored: the keys the caller gave, nothing else."""
        return self.model_dump(exclude_unset=True, mode="json")


def policy_view(policy: GuardPolicySettings) -> dict[str, Any]:
    return policy.model_dump(mode="json")


# --- the store ------------------------------------------------------------------------------------------

class PolicyStore:
    """Effective policies by tenant, cached; overrides read from and written to ``org_policies``."""

    def __init__(self, settings: GuardSettings, db: Database, pubsub: PubSub) -> None:
        self.settings = settings
        self._db = db
        self._pubsub = pubsub
        self._defaults = merged_policy(settings)
        ttl = settings.policy_cache_ttl_s
        self._cache: TTLCache[str, GuardPolicySettings] | None = (
            TTLCache(maxsize=10_000, ttl=ttl) if ttl > 0 else None)
        self._reads: SingleFlight[str, dict[str, Any]] = SingleFlight()

    def configured(self, org_id: str | None) -> GuardPolicySettings:
        """Defaults plus the configuration's override for ``org_id`` (no database)."""
        override = self.settings.tenants.get(org_id) if org_id else None
        return merged_policy(self._defaults, override) if override else self._defaults

    async def for_org(self, org_id: str | None) -> GuardPolicySettings:
        if not org_id:
            return self._defaults
        cached = self._cache.get(org_id) if self._cache is not None else None
        if cached is not None:
            return cached
        configured = self.configured(org_id)
        try:
            stored = await self._reads.run(org_id, lambda: self.stored(org_id))
            policy = merged_policy(configured, stored) if stored else configured
        except ValueError as exc:  # a stored override the current configuration no longer accepts
            log.warning("org %s: stored guard policy ignored (%s); the configured policy applies", org_id, exc)
            policy = configured
        except Exception:
            log.exception("org %s: guard policy lookup failed; the configured policy applies", org_id)
            return configured  # not cached: the next call tries again
        if self._cache is not None:
            self._cache[org_id] = policy
        return policy

    async def stored(self, org_id: str) -> dict[str, Any]:
        async with self._db.tenant_session(org_id) as session:
            row = await session.get(OrgPolicy, org_id)
            return dict(row.policy or {}) if row is not None else {}

    async def replace(self, org_id: str, override: PolicyOverride, *, actor: Principal,
                      ip: str | None = None) -> GuardPolicySettings:
        """Store ``override`` as the tenant's policy (audited as ``policy.update`` with the old and new
        overrides, in the same transaction) and make every replica drop its cached copy."""
        document = override.document()
        policy = merged_policy(self.configured(org_id), document)  # ValueError: the caller's 422
        async with self._db.tenant_session(org_id) as session:
            row = await session.get(OrgPolicy, org_id)
            old = dict(row.policy or {}) if row is not None else {}
            if row is None:
                session.add(OrgPolicy(org_id=org_id, policy=document, updated_at=utcnow()))
            else:
                row.policy, row.updated_at = document, utcnow()
            await audit.record(session, "policy.update", actor=actor, org_id=org_id, target_type="org_policy",
                               target_id=org_id, details={"old": old, "new": document}, ip=ip)
        self.forget(org_id)
        try:
            await self._pubsub.publish(CHANNEL, org_id)
        except Exception:  # other replicas still pick the change up when their entry expires
            log.warning("could not announce the policy change of org %s", org_id, exc_info=True)
        return policy

    def forget(self, org_id: str) -> None:
        self._reads.forget(org_id)
        if self._cache is not None:
            self._cache.pop(org_id, None)

    async def listen(self) -> None:
        """Drop cached policies that another replica (or this one) changed; runs until cancelled."""
        await follow(self._pubsub, CHANNEL, self.forget)


# --- metrics and the guard -----------------------------------------------------------------------------

_DISABLED = GuardPolicySettings(enabled=False)
GuardName = Literal["pii", "moderation", "injection_input", "injection_context"]


class GuardMetrics:
    """``atrium_guard_actions_total{guard, action}``: what the guards did (no tenant labels)."""

    def __init__(self, metrics: Metrics) -> None:
        self.actions = Counter("atrium_guard_actions", "Guard decisions by guard and action.",
                               ["guard", "action"], registry=metrics.registry)

    def count(self, guard: str, action: str) -> None:
        self.actions.labels(guard, action).inc()


class Guard:
    """The policies, the moderator and the metrics, with the checks the pipeline's stages use."""

    def __init__(self, policies: PolicyStore, moderator: Moderator, metrics: GuardMetrics | None = None) -> None:
        self.policies = policies
        self.moderator = moderator
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        """``guard.enabled``: off, no policy applies (tenant overrides included); answers stay sanitised."""
        return self.policies.settings.enabled

    async def policy(self, org_id: str | None) -> GuardPolicySettings:
        if not self.enabled:
            return _DISABLED
        return await self.policies.for_org(org_id)

    def note(self, guard: GuardName, action: str, org_id: str | None, **details: object) -> None:
        """Count and log a guard decision (never the content)."""
        if self.metrics is not None:
            self.metrics.count(guard, action)
        shown = " ".join(f"{key}={value}" for key, value in details.items())
        log.info("guard %s %s org=%s %s", guard, action, org_id, shown)

    def apply_injection(self, text: str, policy: GuardPolicySettings, *, where: Literal["input", "context"],
                        org_id: str | None) -> str:
        """``text`` under the tenant's injection policy for user input or retrieved context."""
        action = policy.injection.input if where == "input" else policy.injection.context
        if action == "off" or not policy.enabled:
            return text
        result = scan(text)
        if not result.reaches(policy.injection.threshold):
            return text
        self.note("injection_input" if where == "input" else "injection_context", action, org_id,
                  score=result.score, rules=",".join(result.rules))
        if action == "refuse":
            what = "the input" if where == "input" else "a retrieved document"
            raise ContentBlocked(f"Possible prompt injection in {what} ({', '.join(result.rules)}); refused by "
                                 "this tenant's policy.")
        if action == "strip":
            return strip_markers(text, result) if where == "input" else strip_offending(text, result)
        return CONTEXT_WARNING + text if where == "context" else text

    def asks_provider(self, policy: GuardPolicySettings) -> bool:
        return policy.moderation.enabled and policy.moderation.provider and self.moderator.provider is not None

    async def moderate(self, policy: GuardPolicySettings, texts: Sequence[str], *, org_id: str | None,
                       for_provider: Sequence[str] | None = None) -> None:
        """The blocklist on ``texts``, then the endpoint on ``for_provider`` (the same texts with personal
        data replaced, unless the policy allows it). Raises ``ContentBlocked`` / ``ModerationUnavailable``."""
        moderation = policy.moderation
        if not moderation.enabled:
            return
        try:
            self.moderator.check_blocklist(texts, use_default=moderation.default_blocklist,
                                           terms=moderation.blocklist, patterns=moderation.patterns)
        except ContentBlocked:
            self.note("moderation", "block", org_id, source="blocklist")
            raise
        if not self.asks_provider(policy):
            return
        try:
            answered = await self.moderator.check_provider(texts if for_provider is None else for_provider)
        except ContentBlocked:
            self.note("moderation", "block", org_id, source="provider")
            raise
        except ModerationUnavailable:
            self.note("moderation", "unavailable_refused", org_id)
            raise
        if not answered:
            self.note("moderation", "unavailable_allowed", org_id)


OFFLOAD_CHARS = 20_000  # PII detection on more text than this runs in a worker thread, off the event loop


async def redact_offloaded(redaction: Redaction, texts: Sequence[str]) -> list[str]:
    """``redaction.redact_all(texts)``, in a worker thread when the texts are long."""
    if sum(len(text) for text in texts) > OFFLOAD_CHARS:
        return await anyio.to_thread.run_sync(redaction.redact_all, texts)
    return redaction.redact_all(texts)
