"""Fallback across models: the first candidate that starts an answer serves it.

A candidate has "started" once it sends its first ``Token`` or ``ToolCallDelta``. An ``ErrorEvent`` before
that is hidden and the next candidate tried; the failed attempt's other events (an early ``Usage`` or
``Start``) are dropped, the serving one's are held back until its first content. After that content, the
candidate's final event is forwarded whatever it is: an answer is never switched to another model
half-way and a cut answer never ends with a made-up ``Done``. When every candidate fails
before content, the stream ends with the last candidate's error, its message naming how many models were
tried. Abandoned streams are always closed.

:func:`stream_with_fallback` takes the candidate list per request (the router orders it with
:func:`atrium.gateway.routing.order_candidates`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import replace

from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ErrorEvent, Token, ToolCallDelta


class closing_stream:
    """``contextlib.aclosing`` for a model's stream: the port promises only an ``AsyncIterator``, so the
    stream is closed on exit when it can be (async generators can; plain iterators have nothing to close).
    A class rather than an ``@asynccontextmanager``: every layer of the gateway enters one per call."""

    __slots__ = ("_events",)

    def __init__(self, events: AsyncIterator[ChatEvent]) -> None:
        self._events = events

    async def __aenter__(self) -> AsyncIterator[ChatEvent]:
        return self._events

    async def __aexit__(self, *_exc: object) -> None:
        await aclose_stream(self._events)


async def aclose_stream(events: AsyncIterator[ChatEvent]) -> None:
    """Close a model's stream if it has ``aclose`` (finishes its ``finally`` blocks, frees connections)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def ended_without_final_event(model: str) -> ErrorEvent:
    """The error for a stream that just stopped: the port promises a final event, so it was cut, and cut
    streams are retryable (another attempt may well succeed)."""
    return ErrorEvent(code="upstream_error", message=f"Model {model!r} ended its stream without a final event.",
                      retryable=True, model=model)


def _always(_error: ErrorEvent) -> bool:
    return True


async def stream_with_fallback(
    candidates: Sequence[ChatModel],
    request: ChatRequest,
    *,
    fallback_on: Callable[[ErrorEvent], bool] = _always,
) -> AsyncGenerator[ChatEvent, None]:
    """Stream ``request`` from the first of ``candidates`` (in the given order) that starts an answer.

    ``fallback_on`` decides which errors before content move on to the next candidate (default: all of
    them); an error it rejects is returned at once.
    """
    last_error: ErrorEvent | None = None
    tried = 0
    for model in candidates:
        tried += 1
        held: list[ChatEvent] = []
        started = False
        failed: ErrorEvent | None = None
        async with closing_stream(model.stream(request)) as events:
            async for event in events:
                if started:
                    yield _named(event, model)
                    if isinstance(event, Done | ErrorEvent):
                        return
                elif isinstance(event, Token | ToolCallDelta):
                    started = True
                    for early in held:
                        yield early
                    yield event
                elif isinstance(event, Done):  # an empty answer is still an answer
                    for early in held:
                        yield early
                    yield _named(event, model)
                    return
                elif isinstance(event, ErrorEvent):
                    failed = _error_named(event, model)
                    break
                else:
                    held.append(event)
        if failed is None:  # the stream stopped without a final event: it was cut
            failed = ended_without_final_event(model.name)
            if started:
                yield failed
                return
        if not fallback_on(failed):
            yield failed
            return
        last_error = failed
    if last_error is None:
        yield ErrorEvent(code="model_unavailable", message="No model is available for this request.")
        return
    names = ", ".join(repr(model.name) for model in candidates)
    plural = "s" if tried > 1 else ""
    yield replace(last_error, message=f"{tried} model{plural} tried ({names}), all failed; the last error: "
                  f"{last_error.message}")


def _named(event: ChatEvent, model: ChatModel) -> ChatEvent:
    """``Done``/``ErrorEvent`` with the serving model's name filled in when the adapter left it empty."""
    if isinstance(event, Done | ErrorEvent) and not event.model:
        return replace(event, model=model.name)
    return event


def _error_named(error: ErrorEvent, model: ChatModel) -> ErrorEvent:
    return error if error.model else replace(error, model=model.name)
