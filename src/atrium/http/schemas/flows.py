"""Response models of the guided flows (``/api/v1/flows``) and of project records (``/api/v1/projects``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atrium.agents.flows.definition import MAX_CHOICES, MAX_TEXT_ANSWER
from atrium.agents.flows.service import FlowView
from atrium.agents.ports import ProjectRecord
from atrium.http.schemas.common import View

FlowStatus = Literal["waiting", "done", "declined", "failed", "cancelled"]
PromptKind = Literal["text", "email", "choice", "multi_choice", "boolean", "password", "confirm"]
Answer = (Annotated[str, Field(max_length=MAX_TEXT_ANSWER)] | bool
          | Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=MAX_CHOICES)] | None)


class FlowAnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"answer": "Launch plan"}]})
    answer: Answer = Field(description="Text (text, email, password, choice), a boolean or yes/no (boolean, "
                                       "confirm), or a list of choice values (multi_choice).")


class ChoiceView(View):
    value: str
    label: str


class FlowPromptView(View):
    """What the flow asks now. ``error``: why the previous answer was refused (the flow did not advance)."""

    flow: str
    step: str
    kind: PromptKind
    question: str
    error: str | None = None
    index: int = Field(description="This prompt's place among the flow's prompts (from 1).")
    total: int
    choices: list[ChoiceView] = Field(default_factory=list)
    suggestions: list[str] = Field([], description="Values proposed for this step (the model's, checked).")
    constraints: dict[str, Any] = Field(default_factory=dict)
    summary: str | None = Field(None, description="A confirmation's summary of what was answered.")
    help: str | None = None


class FlowErrorView(View):
    code: str
    message: str


class FlowStateView(View):
    id: str = Field(description="The flow's id (its agents thread id).")
    flow: str
    status: FlowStatus
    prompt: FlowPromptView | None = None
    result: dict[str, Any] | None = Field(None, description="What the final action made (status done).")
    error: FlowErrorView | None = Field(None, description="Why the final action failed (status failed).")
    values: dict[str, Any] = Field({}, description="The answers so far (passwords never shown).")
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, view: FlowView) -> FlowStateView:
        return cls(id=view.id, flow=view.flow, status=view.status,
                   prompt=FlowPromptView.model_validate(view.prompt) if view.prompt else None,
                   result=view.result, error=FlowErrorView.model_validate(view.error) if view.error else None,
                   values=view.values, created_at=view.created_at, updated_at=view.updated_at)


class FlowStepView(View):
    id: str
    kind: str
    question: str
    choices: list[ChoiceView] = Field(default_factory=list)
    constraints: dict[str, Any] = Field(default_factory=dict)


class FlowDefinitionView(View):
    name: str
    title: str
    description: str
    min_role: str
    steps: list[FlowStepView]


class FlowDefinitionList(View):
    flows: list[FlowDefinitionView]


class ProjectView(View):
    id: str
    title: str
    description: str
    kind: str
    visibility: Literal["org", "private"]
    owned: bool = Field(description="Whether the caller owns it.")
    created_at: datetime | None = None

    @classmethod
    def of(cls, record: ProjectRecord, owned: bool) -> ProjectView:
        return cls(id=record.id, title=record.title, description=record.description, kind=record.kind,
                   visibility=record.visibility, owned=owned, created_at=record.created_at)


class ProjectList(View):
    projects: list[ProjectView]
    next_offset: int | None = None
