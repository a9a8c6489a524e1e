"""A deterministic chat model for tests and offline demos: a real adapter, registered like any other.

Given a grounded prompt it answers from the context: it looks, in the messages from last to first, for the
first numbered source ``[1] ...`` and answers with that source's first sentence followed by `` [1]``. A
prompt without sources gets exactly :data:`NO_ANSWER`. The answer streams word by word (one ``Token`` per
word, the space kept in front of every word after the first), then ``Usage`` counted in words, then
``Done``. Failures can be scripted to exercise error paths.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable

import anyio

from atrium.gateway.ports import ChatEvent, ChatRequest, Done, ErrorEvent, Token, Usage

NO_ANSWER = "I don't know based on the provided documents."

# A numbered source starts with "[1]" at the beginning of a line; its text runs to the next "[n]" line.
_SOURCE_ONE = re.compile(r"^[ \t]*\[1\][ \t]*(.*?)(?=^[ \t]*\[\d+\]|\Z)", re.MULTILINE | re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def grounded_answer(request: ChatRequest) -> str:
    """The fake's answer: first sentence of source ``[1]`` plus `` [1]``, or :data:`NO_ANSWER`."""
    for message in reversed(request.messages):
        match = _SOURCE_ONE.search(message.text)
        if match is None:
            continue
        text = " ".join(match.group(1).split())
        if text:
            return f"{_SENTENCE_END.split(text, maxsplit=1)[0]} [1]"
    return NO_ANSWER


class FakeChatModel:
    """Deterministic ChatModel.

    ``answer`` replaces the grounded-answer rule (e.g. ``lambda request: "fixed text"``);
    ``token_delay`` sleeps before each token; ``fail_before_first`` ends the stream with an ``ErrorEvent``
    before any token; ``fail_after_tokens=n`` does so after ``n`` tokens (or after the last token of a
    shorter answer), never reaching ``Usage``/``Done``. The scripted error uses
    ``error_code`` and ``error_retryable``. ``requests`` records every request seen, for assertions.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        provider: str = "fake",
        answer: Callable[[ChatRequest], str] = grounded_answer,
        token_delay: float = 0.0,
        fail_before_first: bool = False,
        fail_after_tokens: int | None = None,
        error_code: str = "model_unavailable",
        error_retryable: bool = True,
    ) -> None:
        self.name = name
        self.requests: list[ChatRequest] = []
        self.provider = provider
        self._answer = answer
        self._token_delay = token_delay
        self._fail_before_first = fail_before_first
        self._fail_after_tokens = fail_after_tokens
        self._error_code = error_code
        self._error_retryable = error_retryable
        self._closed = False

    async def ready(self) -> bool:
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Stream the answer word by word; honours ``max_tokens`` (finish ``length``) and ``stop``."""
        self.requests.append(request)
        if self._closed:
            yield ErrorEvent(code="model_unavailable", message=f"Model {self.name!r} is closed.")
            return
        if self._fail_before_first:
            yield self._scripted_error(0)
            return
        text, finish_reason = _apply_stop(self._answer(request), request.stop)
        words = _words(text)
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, finish_reason = words[: request.max_tokens], "length"
        for sent, word in enumerate(words):
            if self._fail_after_tokens is not None and sent >= self._fail_after_tokens:
                yield self._scripted_error(sent)
                return
            if self._token_delay:
                await anyio.sleep(self._token_delay)
            yield Token(word)
        if self._fail_after_tokens is not None:  # a shorter answer still fails, after its last token
            yield self._scripted_error(len(words))
            return
        prompt_tokens = sum(len(message.text.split()) for message in request.messages)
        yield Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words))
        yield Done(model=self.name, finish_reason=finish_reason, provider=self.provider)

    def _scripted_error(self, after: int) -> ErrorEvent:
        return ErrorEvent(
            code=self._error_code,
            message=f"Scripted failure of {self.name!r} after {after} token(s).",
            retryable=self._error_retryable,
        )


def _words(text: str) -> list[str]:
    """``"a b  c"`` -> ``["a", " b", "  c"]``: joining the tokens gives the text back."""
    return re.findall(r"\s*\S+", text)


def _apply_stop(text: str, stop: tuple[str, ...]) -> tuple[str, str]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, "stop")
