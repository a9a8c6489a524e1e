"""The agents API in the LangGraph platform's shape (``/assistants``, ``/threads``, runs): the bodies it
takes and the answers it gives, as ``langgraph-sdk`` sends and reads them.

Bodies ignore keys they do not know (the SDKs send every option they have, most of them unset or at their
defaults; an option Atrium does not implement and that would change the outcome, such as ``webhook``, is
refused instead). What they hold is bounded: ids, lists, and the size of metadata.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from atrium.agents.streaming import STREAM_MODES
from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.agents.registry import Assistant
    from atrium.store.models import AgentRun, AgentThread

MAX_METADATA_BYTES = 16_384
ThreadId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
CheckpointId = Annotated[str, Field(min_length=1, max_length=64)]
StreamMode = Literal["values", "updates", "custom", "messages", "messages-tuple", "debug", "tasks", "checkpoints"]
assert set(StreamMode.__args__) == set(STREAM_MODES)  # type: ignore[attr-defined]


def _iso(moment: datetime) -> str:
    """ISO 8601 with its offset (SQLite gives back naive UTC datetimes)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).isoformat()


def _bounded(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value, default=str)) > MAX_METADATA_BYTES:
        raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CheckpointRef(Body):
    thread_id: str | None = Field(None, max_length=64)
    checkpoint_ns: str = Field("", max_length=200)
    checkpoint_id: CheckpointId | None = None


# --- Assistants ---------------------------------------------------------------------------------------------

class AssistantSearch(Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=200)
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000)


class AssistantView(View):
    assistant_id: str
    graph_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, assistant: Assistant) -> AssistantView:
        created = assistant.created_at.isoformat()
        return cls(assistant_id=assistant.assistant_id, graph_id=assistant.graph_id,
                   name=assistant.name or assistant.graph_id, description=assistant.description,
                   config=assistant.config, context={}, metadata=assistant.metadata, version=1,
                   created_at=created, updated_at=created)


class AssistantList(RootModel[list[AssistantView]]):
    """A JSON array of assistants."""


class GraphView(View):
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


# --- Threads ------------------------------------------------------------------------------------------------

class ThreadCreate(Body):
    thread_id: ThreadId | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    visibility: Literal["private", "org"] = Field("private", description="Atrium's: who may read the thread.")

    _metadata = field_validator("metadata")(_bounded)


class ThreadSearch(Body):
    metadata: dict[str, Any] | None = None
    ids: list[ThreadId] | None = Field(None, max_length=100)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"

    _metadata = field_validator("metadata")(_bounded)


class ThreadPatch(Body):
    metadata: dict[str, Any] | None = None
    visibility: Literal["private", "org"] | None = None

    _metadata = field_validator("metadata")(_bounded)


class ThreadView(View):
    thread_id: str
    created_at: Timestamp
    updated_at: Timestamp
    metadata: dict[str, Any]
    status: Literal["idle", "busy", "interrupted", "error"]
    values: dict[str, Any] | list[Any] | None
    interrupts: dict[str, Any]
    visibility: Literal["private", "org"]

    @classmethod
    def of(cls, row: AgentThread) -> ThreadView:
        return cls(thread_id=row.id, created_at=_iso(row.created_at), updated_at=_iso(row.updated_at),
                   metadata=row.meta, status=row.status, values=row.values, interrupts=row.interrupts or {},
                   visibility=row.visibility)


class ThreadList(RootModel[list[ThreadView]]):
    """A JSON array of threads."""


class ThreadStateView(View):
    values: Any
    next: list[str]
    tasks: list[dict[str, Any]]
    interrupts: list[Any]
    metadata: dict[str, Any]
    created_at: str | None
    checkpoint: dict[str, Any] | None
    parent_checkpoint: dict[str, Any] | None


class ThreadStateList(RootModel[list[ThreadStateView]]):
    """A JSON array of thread states (checkpoints), newest first."""


class StateUpdate(Body):
    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = Field(None, max_length=200)
    checkpoint_id: CheckpointId | None = None
    checkpoint: CheckpointRef | None = None

    def target(self) -> str | None:
        return self.checkpoint_id or (self.checkpoint.checkpoint_id if self.checkpoint else None)


class StateUpdated(View):
    checkpoint: dict[str, Any] | None


class HistoryQuery(Body):
    limit: int = Field(10, ge=1, le=1000)
    before: CheckpointId | CheckpointRef | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None

    def before_id(self) -> str | None:
        return self.before.checkpoint_id if isinstance(self.before, CheckpointRef) else self.before


# --- Runs ---------------------------------------------------------------------------------------------------

class RunCommand(Body):
    resume: Any = None
    update: dict[str, Any] | list[Any] | None = None
    goto: str | list[str] | None = None


class RunCreate(Body):
    assistant_id: str = Field(min_length=1, max_length=100)
    input: dict[str, Any] | list[Any] | str | int | float | bool | None = None
    command: RunCommand | None = None
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    checkpoint_id: CheckpointId | None = None
    checkpoint: CheckpointRef | None = None
    interrupt_before: Literal["*"] | list[Annotated[str, Field(max_length=200)]] | None = None
    interrupt_after: Literal["*"] | list[Annotated[str, Field(max_length=200)]] | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "reject"
    if_not_exists: Literal["reject", "create"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    webhook: None = Field(None, description="Not supported: a run with a webhook is refused.")
    after_seconds: Annotated[int, Field(ge=0, le=0)] | None = Field(None, description="Only 0: no delayed runs.")

    _metadata = field_validator("metadata", "config")(_bounded)

    @model_validator(mode="after")
    def _one_of_input_and_command(self) -> RunCreate:
        if self.input is not None and self.command is not None:
            raise ValueError("give either input or command, not both")
        return self

    def stream_modes(self) -> list[str]:
        return [self.stream_mode] if isinstance(self.stream_mode, str) else list(dict.fromkeys(self.stream_mode))

    def target_checkpoint(self) -> str | None:
        return self.checkpoint_id or (self.checkpoint.checkpoint_id if self.checkpoint else None)


class RunView(View):
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: Timestamp
    updated_at: Timestamp
    status: Literal["pending", "running", "success", "error", "interrupted", "cancelled"]
    metadata: dict[str, Any]
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"]
    run_kwargs: dict[str, Any] = Field(serialization_alias="kwargs", description="The run's request.")
    error: dict[str, Any] | None

    @classmethod
    def of(cls, row: AgentRun) -> RunView:
        return cls(run_id=row.id, thread_id=row.thread_id, assistant_id=row.assistant_id,
                   created_at=_iso(row.created_at), updated_at=_iso(row.updated_at),
                   status=row.status, metadata=row.meta, multitask_strategy=row.multitask_strategy,
                   run_kwargs=row.kwargs, error=row.error)


class RunList(RootModel[list[RunView]]):
    """A JSON array of runs, newest first."""


class RunOutput(RootModel[dict[str, Any]]):
    """The thread's values when the run ended; ``__interrupt__``: the interrupts waiting for an answer."""


class RunStreamEvent(View):
    """One Server-Sent Event of a run (``id:``, ``event:``, ``data:`` lines on the wire): ``metadata``
    (``{run_id, attempt}``), ``values``, ``updates``, ``custom``, ``messages/partial``..., ``error``
    (``{error, message}``), ``end``."""

    id: str
    event: str
    data: Any
