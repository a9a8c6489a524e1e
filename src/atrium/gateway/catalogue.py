"""The model catalogue: what callers may name, what serves it, what it costs, and who may use it.

Built once from ``GatewaySettings``. A caller names a catalogue model, one of its aliases, or a route
(a list of models plus a strategy: the rest of the list is the fallback chain); no name means the route
for the request's task, else the default. Tenant policy (``gateway.tenants``) filters what a tenant
sees: ``local_only`` keeps only models whose data stays on this host ("PII stays local"),
``allowed_models`` keeps only the named ones, ``max_output_price_per_1m`` caps the cost tier. A request
that needs tools, JSON mode or vision skips models that declare capabilities without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from atrium.errors import Forbidden, InvalidRequest, NotFound
from atrium.gateway.pricing import Price, default_price
from atrium.gateway.settings import GatewaySettings, ModelSettings, ProviderSettings, RouteStrategy

_LOCAL_KINDS = frozenset({"local", "llamacpp", "ollama", "fake"})
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    name: str
    provider: str
    provider_kind: str
    upstream_model: str
    kind: str = "chat"
    aliases: tuple[str, ...] = ()
    context_window: int = 8192
    max_output_tokens: int = 4096
    capabilities: tuple[str, ...] = ()
    price: Price = field(default_factory=Price)
    local: bool = False
    weight: float = 1.0
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """What a request resolved to: the candidate models in configured order and how to order them."""

    name: str
    entries: tuple[CatalogueEntry, ...]
    strategy: RouteStrategy = "fallback"


def entry_from_settings(name: str, model: ModelSettings, provider: ProviderSettings) -> CatalogueEntry:
    table = default_price(model.model)
    price = Price(
        model.input_price_per_1m if model.input_price_per_1m is not None else table.input_per_1m,
        model.output_price_per_1m if model.output_price_per_1m is not None else table.output_per_1m,
        known=table.known or model.input_price_per_1m is not None or provider.kind in _LOCAL_KINDS,
    )
    return CatalogueEntry(
        name=name, provider=model.provider, provider_kind=provider.kind, upstream_model=model.model,
        kind=model.kind, aliases=tuple(model.aliases), context_window=model.context_window,
        max_output_tokens=model.max_output_tokens, capabilities=tuple(model.capabilities), price=price,
        local=model.local if model.local is not None else provider.kind in _LOCAL_KINDS, weight=model.weight,
        dimensions=model.dimensions,
    )


class Catalogue:
    def __init__(self, entries: Iterable[CatalogueEntry], settings: GatewaySettings) -> None:
        self.entries: dict[str, CatalogueEntry] = {e.name: e for e in entries}
        self._by_name: dict[str, CatalogueEntry] = {}
        for entry in self.entries.values():
            for name in (entry.name, *entry.aliases):
                self._by_name.setdefault(name, entry)
        self._routes = dict(settings.routes)
        self._tenants = dict(settings.tenants)
        chat = [e.name for e in self.entries.values() if e.kind == "chat"]
        self.default = settings.default_model or (chat[0] if chat else "")
        self._routes_seen: dict[tuple[object, ...], Route] = {}

    def entry(self, name: str) -> CatalogueEntry | None:
        return self._by_name.get(name)

    def route(self, requested: str, *, task: str = "chat", org_id: str | None = None,
              local_only: bool = False, kind: str = "chat", needs: frozenset[str] = frozenset()) -> Route:
        """The candidates for a request, tenant policy applied. Raises ``NotFound`` for an unknown name,
        ``Forbidden`` when the tenant may use none of its models, and ``InvalidRequest`` when none has the
        capabilities the request ``needs`` (models that declare no capabilities are not ruled out).
        Results are remembered: the catalogue does not change while the process runs."""
        key = (requested, task, org_id, local_only, kind, needs)
        route = self._routes_seen.get(key)
        if route is None:
            route = self._resolve(requested, task, org_id, local_only, kind, needs)
            if len(self._routes_seen) >= _MAX_REMEMBERED:
                self._routes_seen.clear()
            self._routes_seen[key] = route
        return route

    def _resolve(self, requested: str, task: str, org_id: str | None, local_only: bool, kind: str,
                 needs: frozenset[str]) -> Route:
        name = requested or (task if task in self._routes else self.default)
        if name in self._routes:
            route = self._routes[name]
            entries = tuple(self._by_name[m] for m in route.models)
            strategy: RouteStrategy = route.strategy
        elif name in self._by_name:
            entries, strategy = (self._by_name[name],), "fallback"
        else:
            raise NotFound(f"No model or route named {name!r}; GET /v1/models lists what you may use.",
                           code="model_not_found")
        entries = tuple(e for e in entries if e.kind == kind)
        allowed = self._filter(entries, org_id, local_only)
        if not allowed:
            raise Forbidden(f"Model {name!r} is not available to this tenant under its policy.",
                            code="model_not_allowed")
        capable = tuple(e for e in allowed if not e.capabilities or needs <= set(e.capabilities))
        if not capable:
            raise InvalidRequest(f"Model {name!r} does not support {', '.join(sorted(needs))}.",
                                 code="unsupported_capability")
        return Route(name=name, entries=capable, strategy=strategy)

    def visible(self, org_id: str | None, *, local_only: bool = False) -> list[CatalogueEntry]:
        """The models a tenant may name (for ``GET /v1/models``)."""
        return list(self._filter(tuple(self.entries.values()), org_id, local_only))

    def route_names(self, org_id: str | None, *, local_only: bool = False) -> list[str]:
        """Routes with at least one model the tenant may use."""
        return [name for name, route in self._routes.items()
                if self._filter(tuple(self._by_name[m] for m in route.models), org_id, local_only)]

    def _filter(self, entries: tuple[CatalogueEntry, ...], org_id: str | None,
                local_only: bool) -> tuple[CatalogueEntry, ...]:
        policy = self._tenants.get(org_id) if org_id else None
        if policy is not None and policy.local_only:
            local_only = True
        allowed = set(policy.allowed_models) if policy is not None and policy.allowed_models else None
        max_price = policy.max_output_price_per_1m if policy is not None else None
        return tuple(
            e for e in entries
            if (not local_only or e.local)
            and (allowed is None or e.name in allowed or any(a in allowed for a in e.aliases))
            and (max_price is None or e.price.output_per_1m <= max_price)
        )


def catalogue_entries(settings: GatewaySettings) -> list[CatalogueEntry]:
    return [entry_from_settings(name, model, settings.providers[model.provider])
            for name, model in settings.models.items()]


def price_of(entries: Mapping[str, CatalogueEntry], model: str) -> Price:
    entry = entries.get(model)
    return entry.price if entry is not None else default_price(model)
