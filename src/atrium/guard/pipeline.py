"""The guard pipeline: a tenant's guard policy, applied once per use case in explicit stages.

``GuardPipeline.admit(org_id)`` is the *admit* stage: it looks up the tenant's effective policy once and
returns the ``Admitted`` use case, on which the other stages run:

- *input*: what the caller sent. A grounded question (``Admitted.question``: injection under the input
  policy, moderation); texts to embed (``Admitted.embedding_input``: PII, moderation; called by
  ``Gateway.embed``); a model call's messages (``GuardedChatModel``, ``atrium.guard.model_calls``, the
  outermost gateway wrapper that ``GuardPipeline.wrap`` builds: injection, PII, moderation).
- *context*: retrieved chunks under the context policy (``Admitted.context``), each with the text the
  model is shown (a warning before it under ``flag``) and the text its source shows.
- *output*: the answer. Placeholders put back where the PII policy redacted (``GuardedChatModel``), and
  the Markdown sanitiser with the tenant's link allowlist (``Admitted.output``).

Each stage is applied once: the stages a use case ran are in ``Admitted.checked``, which the model call
carries (``ChatRequest.guarded``) so that ``GuardedChatModel`` does not apply them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from atrium.errors import ContentBlocked
from atrium.gateway.catalogue import Route
from atrium.gateway.ports import ChatModel, ChatRequest
from atrium.gateway.providers.registry import DEFAULT_BASE_URLS, resolve_api_key
from atrium.gateway.settings import ProviderSettings
from atrium.guard.injection import CONTEXT_WARNING
from atrium.guard.model_calls import GuardedChatModel
from atrium.guard.moderation import Moderator, ProviderModeration
from atrium.guard.pii import Redaction
from atrium.guard.policy import Guard, GuardMetrics, PolicyStore, redact_offloaded
from atrium.guard.sanitize import MarkdownSanitizer
from atrium.guard.settings import GuardPolicySettings, GuardSettings
from atrium.store.engine import Database
from atrium.store.ports import PubSub
from atrium.telemetry.metrics import Metrics

GuardStage = Literal["input", "context"]


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk after the context stage: ``prompt`` is what the model is shown ("" when
    stripped to nothing), ``shown`` what its source shows (never the guard's note)."""

    prompt: str
    shown: str


class Admitted:
    """One use case of one tenant, its policy looked up once: the stages after *admit*."""

    def __init__(self, guard: Guard, policy: GuardPolicySettings, org_id: str | None) -> None:
        self._guard = guard
        self.policy = policy
        self.org_id = org_id
        self._checked: set[GuardStage] = set()

    @property
    def checked(self) -> frozenset[str]:
        """The stages applied so far, for ``ChatRequest.guarded``."""
        return frozenset(self._checked)

    async def question(self, question: str) -> str:
        """*input*: a grounded question under the input injection policy and moderation (its sources are
        the tenant's own documents: they pass the *context* stage instead)."""
        self._checked.add("input")
        policy, org_id = self.policy, self.org_id
        if not policy.enabled:
            return question
        question = self._guard.apply_injection(question, policy, where="input", org_id=org_id)
        for_provider = None
        if self._guard.asks_provider(policy) and policy.pii.action != "allow":
            for_provider = Redaction(policy.pii.types).redact_all([question])
        await self._guard.moderate(policy, [question], org_id=org_id, for_provider=for_provider)
        return question

    def context(self, texts: Sequence[str]) -> list[Passage]:
        """*context*: retrieved chunks under the context policy, before they enter a prompt."""
        self._checked.add("context")
        out = []
        for text in texts:
            prompt = self._guard.apply_injection(text, self.policy, where="context", org_id=self.org_id)
            out.append(Passage(prompt=prompt, shown=prompt.removeprefix(CONTEXT_WARNING)))
        return out

    async def embedding_input(self, texts: Sequence[str], *, local: bool) -> list[str]:
        """*input*: texts to embed under the PII policy and moderation (no injection check: nothing
        follows instructions in an embedding). ``local``: the embedding model runs on this host.
        ``route_local`` cannot move an explicitly named embedding model (its vectors would change shape),
        so it refuses instead."""
        self._checked.add("input")
        policy, org_id = self.policy, self.org_id
        if not policy.enabled:
            return list(texts)
        out, for_provider = list(texts), None
        if policy.pii.action != "allow" and policy.pii.types and (not local or self._guard.asks_provider(policy)):
            redaction = Redaction(policy.pii.types)
            redacted = await redact_offloaded(redaction, texts)
            if redaction.active:
                for_provider = redacted
                if not local:
                    action, types = policy.pii.action, ", ".join(redaction.types_found)
                    self._guard.note("pii", action, org_id, types=types, endpoint="embeddings")
                    if action == "block":
                        raise ContentBlocked(f"The input contains personal data or secrets ({types}); this "
                                             "tenant's policy does not send them to an external model.")
                    if action == "route_local":
                        raise ContentBlocked(f"The input contains personal data or secrets ({types}); this "
                                             "tenant's policy keeps them on local models: use a local embedding "
                                             "model.")
                    out = redacted
        await self._guard.moderate(policy, texts, org_id=org_id, for_provider=for_provider)
        return out

    def output(self) -> MarkdownSanitizer:
        """*output*: the answer's sanitiser with the tenant's link allowlist (answers are always
        sanitised, the guard on or off)."""
        return MarkdownSanitizer(self.policy.output.link_domains)


class GuardPipeline:
    """The stages over the guard's policies, moderator and metrics (``Guard``)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def admit(self, org_id: str | None) -> Admitted:
        """*admit*: the tenant's effective policy (disabled when ``guard.enabled`` is off)."""
        return Admitted(self.guard, await self.guard.policy(org_id), org_id)

    async def embedding_input(self, org_id: str | None, texts: Sequence[str], *, local: bool) -> list[str]:
        """An embedding call's *admit* and *input* stages (``Gateway.embed``)."""
        return await (await self.admit(org_id)).embedding_input(texts, local=local)

    def wrap(self, inner: ChatModel, *, route: Callable[[ChatRequest], Route]) -> ChatModel:
        """The model calls' stages as the outermost gateway wrapper (``inner`` itself when the guard is
        off). ``route`` resolves a request that carries no route yet."""
        if not self.guard.enabled:
            return inner
        return GuardedChatModel(inner, self.guard, route=route)


def build_guard(config: GuardSettings, providers: Mapping[str, ProviderSettings], *, db: Database, pubsub: PubSub,
                metrics: Metrics, http_client: httpx.AsyncClient,
                environ: Mapping[str, str] | None = None) -> GuardPipeline:
    """The pipeline over the guard: policies (defaults, configuration, ``org_policies``), the moderator
    (blocklist and the configured endpoint) and its metrics."""
    environ = os.environ if environ is None else environ
    provider = _moderation_endpoint(config, providers, http_client, environ)
    fail_closed = config.moderation_provider.fail_closed if config.moderation_provider is not None else False
    return GuardPipeline(Guard(PolicyStore(config, db, pubsub), Moderator(provider, fail_closed=fail_closed),
                               GuardMetrics(metrics)))


def _moderation_endpoint(guard: GuardSettings, providers: Mapping[str, ProviderSettings],
                         client: httpx.AsyncClient, environ: Mapping[str, str]) -> ProviderModeration | None:
    config = guard.moderation_provider
    if config is None:
        return None
    if config.provider is not None:
        entry = providers.get(config.provider)
        if entry is None:
            raise ValueError(f"guard.moderation_provider.provider: no provider named {config.provider!r}")
        base_url = entry.base_url or DEFAULT_BASE_URLS.get(entry.kind)
        if not base_url:
            raise ValueError(f"guard.moderation_provider: provider {config.provider!r} has no base_url")
        key = resolve_api_key(entry, environ, name=config.provider)
    else:
        assert config.base_url is not None
        base_url, key = config.base_url, config.api_key.get_secret_value() if config.api_key else None
    return ProviderModeration(client, base_url=base_url, api_key=key, model=config.model,
                              timeout_s=config.timeout_s, name=config.provider or "moderation")
