"""Fallback across models: the first candidate that starts an answer serves it.

A candidate has "started" once it sends its first ``Token`` or ``ToolCallDelta``. An ``ErrorEvent`` before
that is hidden and the next candidate tried; the failed attempt's other events (an early ``Usage`` or
``Start``) are dropped, the serving one's are held back until its first content. After that content, the
candidate's final event is forwarded whatever it is: an answer is never switched to another model
half-way and a cut answer never ends with a made-up ``Done``. When every candidate fails
before content, the stream ends with the last candidate's error, its message naming how many models were
tried. Abandoned streams are always closed. Each candidate is opened with
:func:`atrium.gateway.streams.open_events`.

:func:`stream_with_fallback` takes the candidate list per request (the router orders it with
:func:`atrium.gateway.strategies.order_candidates`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace

from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ErrorEvent, Start
from atrium.gateway.streams import FINAL, ChatStream, ended_without_final_event, open_events


def _always(_error: ErrorEvent) -> bool:
    return True


async def stream_with_fallback(
    candidates: Sequence[ChatModel],
    request: ChatRequest,
    *,
    fallback_on: Callable[[ErrorEvent], bool] = _always,
    starts: Sequence[Start] = (),
) -> AsyncGenerator[ChatEvent, None]:
    """Stream ``request`` from the first of ``candidates`` (in the given order) that starts an answer.

    ``fallback_on`` decides which errors before content move on to the next candidate (default: all of
    them); an error it rejects is returned at once. ``starts``, when given, holds one ``Start`` per
    candidate: sent just before the serving candidate's first event, it also names the candidate (the
    router's catalogue names) in place of the model's own name.
    """
    names = [start.model for start in starts] if starts else [model.name for model in candidates]
    last_error: ErrorEvent | None = None
    tried = 0
    for model, name in zip(candidates, names, strict=True):
        tried += 1
        opening = await open_events(model.stream(request), name)
        if opening.events is None:
            assert opening.error is not None
            failed = opening.error if opening.error.model else replace(opening.error, model=name)
            if not fallback_on(failed):
                yield failed
                return
            last_error = failed
            continue
        async with ChatStream(opening.events) as events:
            if starts:
                yield starts[tried - 1]
            *held, first = opening.head
            for early in held:
                yield early
            if isinstance(first, Done):  # an empty answer is still an answer
                yield _named(first, name)
                return
            yield first
            async for event in events:
                if isinstance(event, FINAL):
                    yield _named(event, name)
                    return
                yield event
        yield ended_without_final_event(name)  # the stream stopped without a final event: it was cut
        return
    if last_error is None:
        yield ErrorEvent(code="model_unavailable", message="No model is available for this request.")
        return
    listed = ", ".join(repr(name) for name in names)
    plural = "s" if tried > 1 else ""
    yield replace(last_error, message=f"{tried} model{plural} tried ({listed}), all failed; the last error: "
                  f"{last_error.message}")


def _named(event: Done | ErrorEvent, name: str) -> Done | ErrorEvent:
    """The final event with the serving model's name filled in when the adapter left it empty."""
    return event if event.model else replace(event, model=name)
