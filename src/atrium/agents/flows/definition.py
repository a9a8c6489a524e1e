"""A guided flow, declared: the steps a user is walked through, one prompt at a time.

A ``FlowDefinition`` is a name, a title and an ordered list of steps:

* ``FieldStep``: one typed answer (``text``, ``email``, ``choice``, ``multi_choice``, ``boolean``,
  ``password``) with its rules (``required``, ``min_length``/``max_length``, ``pattern``, the choices and
  how many of them), and optionally ``check``: an async rule that needs the world (is this email taken?);
* ``SuggestionStep``: a field whose prompt carries values proposed first by ``suggest`` (the LLM, with a
  deterministic fallback); the user picks one or answers their own, checked by the same rules;
* ``ConfirmStep``: yes or no over what was collected; ``no`` ends the flow (``declined``) or goes back to
  an earlier step (``on_no``);
* ``ActionStep``: the end: does the thing (creates the account, the record) and returns its result.

``atrium.agents.flows.engine`` compiles a definition into a LangGraph graph in which every prompt is an
``interrupt()``. Everything here is plain data and functions: the rules are checked by ``validate``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from atrium.accounts.principal import Role

if TYPE_CHECKING:
    from atrium.accounts.principal import Principal
    from atrium.agents.context import AgentDeps

FieldKind = Literal["text", "email", "choice", "multi_choice", "boolean", "password"]
PromptKind = Literal["text", "email", "choice", "multi_choice", "boolean", "password", "confirm"]
MAX_TEXT_ANSWER = 4000
MAX_CHOICES = 50
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.][^@\s]{0,253}\.[^@\s.]{2,63}$")
_YES = {"yes", "y", "true", "1", "ok", "confirm", "oui"}
_NO = {"no", "n", "false", "0", "cancel", "non"}


@dataclass(frozen=True, slots=True)
class FlowEnv:
    """What a step's functions see: who runs the flow, the long-lived services (``deps.chat``: the
    gateway's one model; ``deps.extra``: the accounts, the project records...), the answers so far."""

    principal: Principal
    deps: AgentDeps
    values: Mapping[str, Any]
    flow_id: str


Check = Callable[[Any, FlowEnv], Awaitable[str | None]]  # the error of a well-formed value, or None
Suggest = Callable[[FlowEnv], Awaitable[list[str]]]
Summary = Callable[[Mapping[str, Any]], str]
Act = Callable[[FlowEnv], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: str = ""

    def view(self) -> dict[str, str]:
        return {"value": self.value, "label": self.label or self.value}


@dataclass(frozen=True, slots=True)
class FieldStep:
    id: str
    kind: FieldKind
    question: str
    required: bool = True
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    pattern_error: str = "The answer does not have the expected form."
    choices: tuple[Choice, ...] = ()
    min_choices: int = 0
    max_choices: int | None = None
    check: Check | None = None
    help: str = ""

    def constraints(self) -> dict[str, Any]:
        found = {"required": self.required, "min_length": self.min_length, "max_length": self.max_length,
                 "pattern": self.pattern}
        if self.kind == "multi_choice":
            found.update(min_choices=self.min_choices, max_choices=self.max_choices)
        return {key: value for key, value in found.items() if value is not None}


@dataclass(frozen=True, slots=True)
class SuggestionStep(FieldStep):
    """A field whose prompt lists ``suggest``'s proposals (at most ``count``)."""

    suggest: Suggest | None = None
    count: int = 3


@dataclass(frozen=True, slots=True)
class ConfirmStep:
    id: str
    question: str
    summary: Summary | None = None  # what is being confirmed, from the answers so far
    on_no: str | None = None  # a step id to go back to; None: the flow ends as declined


@dataclass(frozen=True, slots=True)
class ActionStep:
    id: str
    act: Act


Step = FieldStep | ConfirmStep | ActionStep


@dataclass(frozen=True, slots=True)
class FlowDefinition:
    name: str
    title: str
    description: str
    steps: tuple[Step, ...]
    min_role: Role = "member"  # the role a caller needs to start it
    erase_on_finish: bool = False  # erase its checkpoints once it ended (its state held secrets' hashes)
    secret_steps: tuple[str, ...] = field(default=())  # answers never shown back (password hashes)

    def __post_init__(self) -> None:
        ids = [step.id for step in self.steps]
        if len(set(ids)) != len(ids) or not all(re.fullmatch(r"[a-z][a-z0-9_]{0,39}", i) for i in ids):
            raise ValueError(f"flow {self.name!r}: step ids must be unique snake_case names")
        if not self.steps or not isinstance(self.steps[-1], ActionStep):
            raise ValueError(f"flow {self.name!r}: the last step must be an ActionStep")
        for step in self.steps:
            if isinstance(step, ConfirmStep) and step.on_no is not None and step.on_no not in ids:
                raise ValueError(f"flow {self.name!r}: {step.id}.on_no names no step")

    def step(self, step_id: str) -> Step:
        return next(step for step in self.steps if step.id == step_id)

    def prompts(self) -> list[FieldStep | ConfirmStep]:
        return [step for step in self.steps if not isinstance(step, ActionStep)]

    def describe(self) -> dict[str, Any]:
        """The definition as the API lists it (no functions)."""
        return {"name": self.name, "title": self.title, "description": self.description, "min_role": self.min_role,
                "steps": [{"id": step.id, "kind": _kind_of(step),
                           "question": getattr(step, "question", ""),
                           **({"choices": [c.view() for c in step.choices]}
                              if isinstance(step, FieldStep) and step.choices else {}),
                           **({"constraints": step.constraints()} if isinstance(step, FieldStep) else {})}
                          for step in self.prompts()]}


def _kind_of(step: Step) -> str:
    if isinstance(step, ConfirmStep):
        return "confirm"
    if isinstance(step, ActionStep):
        return "action"
    return step.kind


def prompt_payload(definition: FlowDefinition, step: FieldStep | ConfirmStep, values: Mapping[str, Any], *,
                   error: str | None, suggestions: list[str] | None = None) -> dict[str, Any]:
    """What an interrupt carries: the step, its kind and question, the choices or suggestions, the error
    of the previous answer (None the first time), and where the flow is."""
    prompts = definition.prompts()
    payload: dict[str, Any] = {"flow": definition.name, "step": step.id, "kind": _kind_of(step),
                               "question": step.question, "error": error,
                               "index": prompts.index(step) + 1, "total": len(prompts)}
    if isinstance(step, FieldStep):
        payload["choices"] = [choice.view() for choice in step.choices]
        payload["suggestions"] = list(suggestions or [])
        payload["constraints"] = step.constraints()
        if step.help:
            payload["help"] = step.help
    else:
        payload["choices"] = [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}]
        payload["summary"] = step.summary(values) if step.summary is not None else ""
    return payload


class Invalid(ValueError):
    """An answer that breaks a step's rules; its message is shown with the next prompt."""


def validate(step: FieldStep, answer: Any) -> Any:
    """The answer in its kind's form (a stripped string, a lowercase email, a choice's value, a list of
    values, a bool), or ``Invalid``. Passwords are not handled here (the service hashes them first)."""
    if step.kind == "boolean":
        return parse_yes_no(answer)
    if step.kind == "multi_choice":
        return _multi(step, answer)
    if isinstance(answer, bool) or (not isinstance(answer, (str, int, float)) and answer is not None):
        raise Invalid("The answer must be text.")
    text = "" if answer is None else str(answer).strip()
    if len(text) > MAX_TEXT_ANSWER:
        raise Invalid(f"The answer is longer than {MAX_TEXT_ANSWER} characters.")
    if not text:
        if step.required:
            raise Invalid("An answer is required.")
        return ""
    if step.kind == "choice":
        return _choice(step, text)
    if step.kind == "email":
        text = text.lower()
        if not _EMAIL.fullmatch(text) or len(text) > 320:
            raise Invalid("This is not a valid email address.")
    if step.min_length is not None and len(text) < step.min_length:
        raise Invalid(f"The answer needs at least {step.min_length} characters.")
    if step.max_length is not None and len(text) > step.max_length:
        raise Invalid(f"The answer may have at most {step.max_length} characters (it has {len(text)}).")
    if step.pattern is not None and not re.fullmatch(step.pattern, text):
        raise Invalid(step.pattern_error)
    return text


def parse_yes_no(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str) and answer.strip().lower() in _YES | _NO:
        return answer.strip().lower() in _YES
    raise Invalid("Answer yes or no.")


def _choice(step: FieldStep, text: str) -> str:
    for choice in step.choices:
        if text.lower() in (choice.value.lower(), (choice.label or choice.value).lower()):
            return choice.value
    raise Invalid("Choose one of: " + ", ".join(choice.value for choice in step.choices) + ".")


def _multi(step: FieldStep, answer: Any) -> list[str]:
    if answer is None:
        items: list[Any] = []
    elif isinstance(answer, str):
        items = [part for part in answer.split(",") if part.strip()]
    elif isinstance(answer, list) and len(answer) <= MAX_CHOICES:
        items = answer
    else:
        raise Invalid(f"Answer a list of at most {MAX_CHOICES} choices.")
    chosen: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise Invalid("Each choice is text.")
        value = _choice(step, item.strip())
        if value not in chosen:
            chosen.append(value)
    low = max(step.min_choices, 1 if step.required else 0)
    if len(chosen) < low:
        raise Invalid(f"Choose at least {low}.")
    if step.max_choices is not None and len(chosen) > step.max_choices:
        raise Invalid(f"Choose at most {step.max_choices}.")
    return chosen
