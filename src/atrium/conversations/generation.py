"""Runs a grounded prompt through the chat model, emitting events into an ``AnswerRun``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from atrium.conversations.runs import AnswerRun
from atrium.errors import AppError
from atrium.gateway.ports import CallContext, ChatModel, ChatRequest, Done, ErrorEvent, Token, Usage
from atrium.gateway.settings import ChatSettings
from atrium.guard.sanitize import MarkdownSanitizer
from atrium.knowledge.answering import NO_ANSWER, GroundedPrompt, Source, cite

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    text: str = ""
    model: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0,
                                                            "total_tokens": 0})
    sources: list[Source] = field(default_factory=list)
    error: dict[str, Any] | None = None
    latency_ms: float = 0.0
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # {id, kind, title, description} made by the turn

    @property
    def status(self) -> str:
        return "error" if self.error else "complete"

    def source_dicts(self) -> list[dict[str, object]]:
        return [source.to_dict() for source in self.sources]


async def generate(model: ChatModel, prompt: GroundedPrompt, run: AnswerRun, *, max_tokens: int,
                   temperature: float, outcome: Outcome, context: CallContext,
                   sanitizer: MarkdownSanitizer | None = None, model_name: str = "") -> Outcome:
    """Fill ``outcome`` as the model streams (so a cancelled run still holds its partial text).

    The answer goes through the Markdown sanitiser (atrium.guard.sanitize) as it streams: tokens are
    emitted sanitised (a construct cut across tokens, like a link, is held back until complete), and the
    stored answer is exactly what was streamed. ``model_name``: a catalogue model or route the caller chose
    ("" = the task's route)."""
    sanitizer = sanitizer or MarkdownSanitizer()
    started = time.perf_counter()
    if not prompt.has_context:
        outcome.text = NO_ANSWER
        run.emit("token", text=NO_ANSWER)
        return outcome
    parts: list[str] = []
    # guarded: the stages the answerer ran are not run again on the model call.
    request = ChatRequest(messages=prompt.messages, max_tokens=max_tokens, temperature=temperature,
                          context=context, guarded=prompt.guarded, model=model_name)
    async for event in model.stream(request):
        match event:
            case Token(text=text):
                # Counted as they stream, so a cut or cancelled answer is still metered; the provider's
                # Usage (exact, with the prompt) replaces the count when it arrives.
                outcome.usage["completion_tokens"] += 1
                outcome.usage["total_tokens"] += 1
                safe = sanitizer.feed(text)
                if safe:
                    parts.append(safe)
                    outcome.text = "".join(parts)
                    run.emit("token", text=safe)
            case Usage(prompt_tokens=p, completion_tokens=c):
                outcome.usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            case Done(model=name):
                outcome.model = name
            case ErrorEvent(code=code, message=message):
                outcome.error = {"code": code, "message": message}
    rest = sanitizer.finish()
    if rest:
        parts.append(rest)
        run.emit("token", text=rest)
    outcome.text = "".join(parts)
    outcome.sources = cite(outcome.text, prompt.sources, prompt.texts)
    outcome.latency_ms = (time.perf_counter() - started) * 1000
    return outcome


async def answer_and_store(*, prompt_for: Callable[[], Awaitable[GroundedPrompt]], model: ChatModel,
                           run: AnswerRun, settings: ChatSettings, context: CallContext,
                           store: Callable[[Outcome], Awaitable[None]],
                           sanitizer: MarkdownSanitizer | None = None, model_name: str = "") -> Outcome:
    """Produce an answer into ``run`` and always store it: when it completes, when it fails (keeping the
    partial text) and when it is cancelled at shutdown (as ``interrupted``)."""
    outcome = Outcome()
    try:
        prompt = await prompt_for()
        outcome.sources = list(prompt.sources)
        await generate(model, prompt, run, max_tokens=settings.max_tokens, temperature=settings.temperature,
                       outcome=outcome, context=context, sanitizer=sanitizer, model_name=model_name)
    except asyncio.CancelledError:
        outcome.error = {"code": "interrupted", "message": "The server stopped before the answer ended."}
        await asyncio.shield(store(outcome))
        raise
    except AppError as exc:  # refused (a guard, a budget...) or failed in a way the caller is told about
        log.info("answer run ended with %s", exc.code)
        outcome.error = error_of(exc)
    except Exception as exc:  # the run must always end with a stored answer and a final event
        log.exception("answer run failed")
        outcome.error = error_of(exc)
    await store(outcome)
    return outcome


def error_of(exc: Exception) -> dict[str, str]:
    """The caller-safe form of an unexpected failure: our own errors keep their code and message."""
    if isinstance(exc, AppError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "internal_error", "message": "The answer failed because of an internal error."}
