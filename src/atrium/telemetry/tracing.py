"""Spans: the ``Tracer`` port, a no-op default, and a recording adapter.

The port is the subset of OpenTelemetry's ``opentelemetry.trace.Tracer`` that Atrium uses:
``start_as_current_span(name, attributes=...)`` as a context manager whose span takes ``set_attribute``
and ``set_status``. So an OpenTelemetry tracer (``trace.get_tracer("atrium")``) can be passed wherever a
``Tracer`` is expected, once the tracing issue wires one in; until then ``NOOP_TRACER`` costs a context
manager per span. ``RecordingTracer`` keeps finished spans in memory (tests, and a debugging aid);
its parent links follow the current span through ``contextvars``, so they hold across the asyncio tasks
a LangGraph run starts.

Span statuses are plain strings here (``"ok"``, ``"error"``); an OpenTelemetry adapter maps them to
``StatusCode``. Attributes never carry secrets or message text: ids, names, counts, codes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

AttributeValue = str | bool | int | float


class Span(Protocol):
    """One unit of work being timed."""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Attach ``key=value`` (an id, a name, a count; never a secret or user text)."""
        ...

    def set_status(self, status: str, description: str | None = None) -> None:
        """``"ok"`` or ``"error"`` (with a short, caller-safe description such as an error code)."""
        ...


class Tracer(Protocol):
    """Starts spans; the current span (if any) is the new one's parent."""

    def start_as_current_span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None,
                              ) -> contextlib.AbstractContextManager[Span]:
        """A context manager around the work; the span ends when it exits (an exception marks it error)."""
        ...


class _NoopSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def set_status(self, status: str, description: str | None = None) -> None:
        return None


class _NoopContext:
    """A reusable context manager: no allocation per span."""

    span = _NoopSpan()

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, *exc: object) -> None:
        return None


class NoopTracer:
    """The default: spans cost one method call and record nothing."""

    _context = _NoopContext()

    def start_as_current_span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None,
                              ) -> contextlib.AbstractContextManager[Span]:
        return self._context


NOOP_TRACER = NoopTracer()


@dataclass(slots=True)
class RecordedSpan:
    """A span as ``RecordingTracer`` keeps it once ended."""

    name: str
    attributes: dict[str, AttributeValue]
    span_id: int
    parent_id: int | None
    started: float  # perf_counter seconds
    ended: float = 0.0
    status: str = "unset"
    description: str | None = None

    @property
    def duration_ms(self) -> float:
        return (self.ended - self.started) * 1000

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_status(self, status: str, description: str | None = None) -> None:
        self.status, self.description = status, description


@dataclass
class RecordingTracer:
    """Keeps every finished span in ``spans``, in the order they ended."""

    spans: list[RecordedSpan] = field(default_factory=list)
    _current: ContextVar[RecordedSpan | None] = field(
        default_factory=lambda: ContextVar("atrium_recording_span", default=None))
    _next_id: int = 1

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None,
                              ) -> Iterator[Span]:
        parent = self._current.get()
        span = RecordedSpan(name, dict(attributes or {}), self._next_id, parent.span_id if parent else None,
                            time.perf_counter())
        self._next_id += 1
        token = self._current.set(span)
        try:
            yield span
        except BaseException as exc:
            if span.status == "unset":
                span.set_status("error", type(exc).__name__)
            raise
        finally:
            span.ended = time.perf_counter()
            if span.status == "unset":
                span.status = "ok"
            self._current.reset(token)
            self.spans.append(span)

    def named(self, prefix: str = "") -> list[str]:
        """The names of the finished spans (those starting with ``prefix``), in the order they started."""
        return [span.name for span in sorted(self.spans, key=lambda s: s.started) if span.name.startswith(prefix)]
