"""The ``project`` flow: a member creates a project record, guided.

title (1 to 100 characters) -> description -> type (the model proposes the likeliest of a fixed list from
the description; a keyword rule stands in when it answers nothing usable) -> visibility (public: the
organisation sees it; private: only its owner) -> confirmation -> the record is created through
``ProjectRecords`` with the caller as its owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from atrium.agents.flows.definition import ActionStep, Choice, ConfirmStep, FieldStep, FlowDefinition, SuggestionStep
from atrium.agents.flows.suggest import suggestions
from atrium.agents.ports import PROJECT_KINDS, ProjectRecords

if TYPE_CHECKING:
    from atrium.agents.flows.definition import FlowEnv

# Words that point at a kind, for the deterministic fallback (first match in the description wins).
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "software": ("app", "api", "code", "software", "website", "backend", "frontend", "service", "bug", "deploy",
                 "mobile", "platform", "library"),
    "research": ("research", "study", "experiment", "analysis", "survey", "paper", "investigate", "data"),
    "marketing": ("marketing", "campaign", "brand", "launch", "newsletter", "social", "ads", "seo", "audience"),
    "design": ("design", "logo", "mockup", "ux", "ui", "prototype", "figma", "illustration"),
    "event": ("event", "conference", "meetup", "workshop", "party", "wedding", "webinar", "offsite"),
    "operations": ("operations", "process", "hiring", "onboarding", "budget", "office", "inventory", "logistics"),
}


def keyword_kinds(description: str) -> list[str]:
    """The kinds the description's words point at, most mentioned first, then ``other``."""
    words = [word.strip(".,;:!?()\"'").lower() for word in description.split()]
    scored = sorted(((sum(words.count(k) for k in keys), kind) for kind, keys in _KEYWORDS.items()),
                    key=lambda pair: -pair[0])
    return [kind for score, kind in scored if score > 0] + ["other"]


def kind_of(raw: str) -> str | None:
    value = raw.strip().lower()
    return value if value in PROJECT_KINDS else None


async def _suggest_kinds(env: FlowEnv) -> list[str]:
    description = str(env.values.get("description", ""))
    instruction = (f"Which project types fit this project best? Choose among: {', '.join(PROJECT_KINDS)}. "
                   f"Best first.\nTitle: {env.values.get('title', '')}\nDescription: {description[:1500]}")
    return await suggestions(env, instruction, count=3, normalise=kind_of, fallback=keyword_kinds(description))


def _summary(values: Mapping[str, Any]) -> str:
    shown = "the organisation" if values.get("visibility") == "public" else "only you"
    return (f"Create the {values.get('kind')} project \"{values.get('title')}\", visible to {shown}: "
            f"{values.get('description')}")


async def _create(env: FlowEnv) -> dict[str, Any]:
    projects: ProjectRecords | None = env.deps.extra.get("projects")
    if projects is None:
        raise RuntimeError("the project flow needs project records (AgentDeps.extra['projects'])")
    values = env.values
    record = await projects.create(env.principal, str(values["title"]), str(values.get("description", "")),
                                   kind=str(values["kind"]),
                                   visibility="org" if values.get("visibility") == "public" else "private")
    return {"project_id": record.id, "title": record.title, "kind": record.kind, "visibility": record.visibility}


def project_flow() -> FlowDefinition:
    return FlowDefinition(
        name="project", title="Create a project",
        description="Title, description, a type suggested from the description, visibility; then the record.",
        min_role="member",
        steps=(
            FieldStep("title", "text", "What is the project's title?", max_length=100),
            FieldStep("description", "text", "Describe the project in a few sentences.", max_length=2000),
            SuggestionStep("kind", "choice", "What type of project is it? The first suggestion is the likeliest.",
                           choices=tuple(Choice(kind) for kind in PROJECT_KINDS), suggest=_suggest_kinds),
            FieldStep("visibility", "choice", "Should the project be public (your organisation sees it) or "
                      "private (only you)?", choices=(Choice("public", "Public"), Choice("private", "Private"))),
            ConfirmStep("confirm", "Create this project?", summary=_summary),
            ActionStep("create_project", _create),
        ))
