"""Guided flows: declarative multi-step forms (typed fields, LLM suggestions, confirmation, a final action)
run as LangGraph graphs whose prompts are ``interrupt()``s. ``definition`` declares, ``engine`` compiles,
``service`` runs them for the API (REST ``/api/v1/flows``, WebSocket ``flow.*``); ``onboarding`` and
``project`` are the two Atrium ships."""

from __future__ import annotations

from atrium.agents.flows.definition import FlowDefinition
from atrium.agents.flows.onboarding import onboarding_flow
from atrium.agents.flows.project import project_flow


def shipped_flows() -> dict[str, FlowDefinition]:
    """The flows Atrium ships, by name."""
    return {flow.name: flow for flow in (onboarding_flow(), project_flow())}
