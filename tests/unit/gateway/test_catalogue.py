"""The catalogue resolves names, aliases, routes and task defaults, and applies tenant policy."""

from __future__ import annotations

import pytest

from atrium.errors import Forbidden, NotFound
from atrium.gateway.catalogue import Catalogue, catalogue_entries
from atrium.gateway.pricing import default_price
from atrium.settings import GatewaySettings


def gateway(**extra: object) -> GatewaySettings:
    return GatewaySettings.model_validate({
        "providers": {"openai": {"kind": "openai", "api_key": "sk-test"}, "here": {"kind": "llamacpp"},
                      "claude": {"kind": "anthropic", "api_key": "sk-ant"}},
        "models": {
            "gpt": {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "aliases": ["fast"]},
            "sonnet": {"provider": "claude", "model": "claude-sonnet-4-20250514", "aliases": ["smart"],
                       "output_price_per_1m": 12.0},
            "qwen": {"provider": "here", "model": "qwen2.5", "aliases": ["local"]},
        },
        "routes": {"qa": {"models": ["smart", "fast", "local"], "strategy": "lowest_cost"}},
        **extra,
    })


def test_names_aliases_and_routes_resolve() -> None:
    config = gateway()
    catalogue = Catalogue(catalogue_entries(config), config)
    assert [e.name for e in catalogue.route("fast").entries] == ["gpt"]
    assert [e.name for e in catalogue.route("gpt").entries] == ["gpt"]
    qa = catalogue.route("qa")
    assert [e.name for e in qa.entries] == ["sonnet", "gpt", "qwen"] and qa.strategy == "lowest_cost"
    # no name: the task's route when there is one, else the default model (the first one)
    assert catalogue.route("", task="qa").name == "qa"
    assert [e.name for e in catalogue.route("", task="summarize").entries] == ["gpt"]
    with pytest.raises(NotFound) as missing:
        catalogue.route("gpt-9")
    assert missing.value.code == "model_not_found"


def test_prices_come_from_the_table_by_prefix_and_config_wins() -> None:
    config = gateway()
    entries = {e.name: e for e in catalogue_entries(config)}
    assert entries["gpt"].price.input_per_1m == default_price("gpt-4o-mini").input_per_1m == 0.15
    assert entries["sonnet"].price.input_per_1m == 3.0 and entries["sonnet"].price.output_per_1m == 12.0
    assert entries["qwen"].price.cost(1000, 1000) == 0.0 and entries["qwen"].local
    assert not default_price("mystery-model").known
    assert entries["gpt"].price.cost(1_000_000, 2_000_000) == pytest.approx(0.15 + 1.2)


def test_local_only_tenants_only_see_local_models() -> None:
    config = gateway(tenants={"org-pii": {"local_only": True}, "org-small": {"allowed_models": ["fast"]}})
    catalogue = Catalogue(catalogue_entries(config), config)
    assert [e.name for e in catalogue.route("qa", org_id="org-pii").entries] == ["qwen"]
    with pytest.raises(Forbidden):
        catalogue.route("smart", org_id="org-pii")
    assert [e.name for e in catalogue.visible("org-pii")] == ["qwen"]
    assert [e.name for e in catalogue.visible("org-small")] == ["gpt"]
    assert [e.name for e in catalogue.route("qa", org_id="org-small").entries] == ["gpt"]
    # a per-request local_only flag (e.g. PII found in the prompt) has the same effect
    assert [e.name for e in catalogue.route("qa", org_id="other", local_only=True).entries] == ["qwen"]
    assert len(catalogue.visible("other")) == 3


def test_settings_reject_dangling_references() -> None:
    with pytest.raises(ValueError, match="no provider named"):
        GatewaySettings.model_validate({"models": {"m": {"provider": "nope", "model": "x"}}})
    with pytest.raises(ValueError, match="no model named"):
        gateway(routes={"r": {"models": ["ghost"]}})


def test_capabilities_and_cost_tier_narrow_the_candidates() -> None:
    from atrium.errors import InvalidRequest

    config = gateway(tenants={"org-thrifty": {"max_output_price_per_1m": 5.0}})
    config.models["gpt"].capabilities = ["tools", "json"]
    config.models["sonnet"].capabilities = ["vision"]
    catalogue = Catalogue(catalogue_entries(config), config)
    # qwen declares nothing, so it is not ruled out; sonnet declares no tools
    assert [e.name for e in catalogue.route("qa", needs=frozenset({"tools"})).entries] == ["gpt", "qwen"]
    with pytest.raises(InvalidRequest) as unsupported:
        catalogue.route("smart", needs=frozenset({"tools"}))
    assert unsupported.value.code == "unsupported_capability"
    # sonnet's output costs 12 per 1M: above this tenant's tier
    assert [e.name for e in catalogue.route("qa", org_id="org-thrifty").entries] == ["gpt", "qwen"]


def test_a_request_needs_what_it_uses() -> None:
    from atrium.gateway.ports import ChatMessage, ChatRequest
    from atrium.gateway.router import needs_of

    plain = ChatRequest(messages=(ChatMessage("user", "hi"),))
    assert needs_of(plain) == frozenset()
    image = ChatMessage("user", ({"type": "text", "text": "what is this?"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}))
    rich = ChatRequest(messages=(image,), tools=({"type": "function", "function": {"name": "f"}},),
                       response_format={"type": "json_object"})
    assert needs_of(rich) == frozenset({"tools", "json", "vision"})
