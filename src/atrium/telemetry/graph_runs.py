"""Tracing of LangGraph runs: a span per run (``graph.<name>``, the nodes' spans beneath it) and, when
``telemetry.langsmith.enabled``, the run sent to LangSmith by LangChain's own tracer.

Every graph run in Atrium (the assistant behind ``/api/v1/chat/ask``, the agents API's runs, guided flows)
runs inside :meth:`GraphRunTracing.run`. With LangSmith off the run is explicitly kept from LangSmith, so a
``LANGSMITH_TRACING=true`` left in the environment sends nothing off the machine; with it on, LangChain's
tracer sends the run tree through a client built here, whose inputs, outputs and metadata pass through
the log redaction first (``telemetry/logging.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from atrium.telemetry.logging import redact_value
from atrium.telemetry.settings import LangSmithSettings
from atrium.telemetry.tracing import NOOP_TRACER, AttributeValue, Tracer

log = logging.getLogger(__name__)


def _redacted(values: Mapping[str, Any]) -> dict[str, Any]:
    cleaned = redact_value(dict(values))
    return cleaned if isinstance(cleaned, dict) else {}


class GraphRunTracing:
    """Where graph runs are traced: ``tracer`` (Atrium's ``Tracer`` port) and, optionally, a LangSmith
    client (``langsmith.Client``) with its project."""

    def __init__(self, tracer: Tracer = NOOP_TRACER, langsmith: Any = None, project: str | None = None) -> None:
        self.tracer = tracer
        self.langsmith = langsmith
        self.project = project

    def connect(self, settings: LangSmithSettings) -> None:
        """Send runs to LangSmith from now on, when ``settings.enabled`` (``endpoint``/``api_key`` unset: the
        client reads ``LANGSMITH_ENDPOINT``/``LANGSMITH_API_KEY``; ``project`` unset: ``LANGSMITH_PROJECT``,
        else LangSmith's default). Blocking (the client reads files): call it from a thread."""
        if not settings.enabled:
            return
        from langchain_core.env import get_runtime_environment
        from langsmith import Client
        from langsmith.env import get_runtime_environment as langsmith_runtime

        # Both are computed once and cached, the first time by spawning ``uname``: here, not inside a run on
        # the event loop.
        get_runtime_environment()
        langsmith_runtime()
        self.langsmith = Client(
            api_url=settings.endpoint,
            api_key=settings.api_key.get_secret_value() if settings.api_key is not None else None,
            hide_inputs=_redacted, hide_outputs=_redacted, hide_metadata=_redacted)
        self.project = settings.project

    @contextlib.contextmanager
    def run(self, graph: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[None]:
        """Around one run of ``graph`` (``astream``/``ainvoke`` inside the block)."""
        from langsmith import tracing_context

        if self.langsmith is None:
            langsmith = tracing_context(enabled=False)
        else:
            langsmith = tracing_context(enabled=True, client=self.langsmith, project_name=self.project,
                                        tags=["atrium", graph])
        with self.tracer.start_as_current_span(f"graph.{graph}", attributes={"atrium.graph": graph,
                                                                              **(attributes or {})}), langsmith:
            yield

    def flush(self) -> None:
        """Send what the LangSmith client still holds (blocking: call it from a thread)."""
        if self.langsmith is not None:
            try:
                self.langsmith.flush()
            except Exception:
                log.warning("LangSmith: runs could not be sent at shutdown", exc_info=True)


NO_GRAPH_TRACING = GraphRunTracing()
