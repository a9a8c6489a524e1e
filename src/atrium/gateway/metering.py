"""Metering: one usage record for every gateway call, whatever way it ended.

``MeteredChatModel`` wraps the gateway's stack (the same port) and watches the events go by. Tokens come
from the provider's ``Usage`` when it sent one; otherwise (a cut stream, a cancelled request, a provider
without usage) they are counted offline from the request and the text that streamed, and the record is
marked ``estimated``. Cost uses the serving model's catalogue price. Records go to a ``UsageRecorder``,
which writes them in batches off the request path (a database round trip per call would dominate the
gateway's own cost); ``aclose`` flushes what is left. A batch the database cannot take now (locked,
restarting, unreachable) is kept for the next flush; rows it refuses for good (their organisation was
deleted) are dropped and logged, without holding back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert

from atrium.gateway import ports
from atrium.gateway.catalogue import CatalogueEntry, price_of
from atrium.gateway.ports import ChatModel, ChatRequest, Usage
from atrium.gateway.tokens import TokenCounter
from atrium.gateway.wrapping import ChatModelWrapper
from atrium.store.engine import Database
from atrium.store.models import UsageRecord
from atrium.store.scope import rescope

log = logging.getLogger(__name__)

_FIRST_OUTPUT = (ports.Token, ports.ToolCallDelta)


@dataclass(frozen=True, slots=True)
class UsageRow:
    org_id: str
    user_id: str | None
    api_key_id: str | None
    endpoint: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    outcome: str
    estimated: bool
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class UsageRecorder:
    """Buffers usage rows and writes them in batches (every ``interval_s`` or ``batch_size`` rows)."""

    def __init__(self, db: Database, *, interval_s: float = 1.0, batch_size: int = 2000,
                 max_pending: int = 200_000) -> None:
        self._db = db
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._max_pending = max_pending  # rows kept through a database outage, at most
        self._pending: list[UsageRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def record(self, row: UsageRow) -> None:
        if self._closed:
            log.warning("usage recorded after close: writing it is no longer possible")
            return
        self._pending.append(row)
        if self._task is None:
            # A context of its own: the task outlives the request that happened to start it (its trace, its
            # request id in logs).
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-recorder",
                                                                context=contextvars.Context())
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        by_org: dict[str, list[UsageRow]] = {}
        for row in rows:
            by_org.setdefault(row.org_id, []).append(row)
        try:
            await self._write(by_org)
            return
        except Exception as exc:
            if _transient(exc):  # the database is away: each organisation alone would fail the same way
                kept = rows
                log.warning("the database cannot take usage rows now", exc_info=True)
            else:
                log.warning("the database refused a batch of %d usage rows; writing each organisation's alone",
                            len(rows), exc_info=True)
                kept = await self._write_each(by_org)
        if kept:
            waiting = kept + self._pending
            self._pending = waiting[-self._max_pending:]
            lost = len(waiting) - len(self._pending)
            log.error("could not write %d usage rows; kept for the next flush%s", len(kept),
                      f" ({lost} oldest dropped: over {self._max_pending} waiting)" if lost else "")

    async def _write_each(self, by_org: Mapping[str, list[UsageRow]]) -> list[UsageRow]:
        """Write each organisation's rows in a transaction of its own: those the database refuses are
        dropped (logged) without holding back the others. Returns the rows to try again."""
        kept: list[UsageRow] = []
        for org_id, org_rows in by_org.items():
            try:
                await self._write({org_id: org_rows})
            except Exception as exc:
                if _transient(exc):
                    kept.extend(org_rows)
                else:
                    log.exception("dropped %d usage rows of org %s: the database refuses them", len(org_rows),
                                  org_id)
        return kept

    async def _write(self, by_org: Mapping[str, list[UsageRow]]) -> None:
        # One transaction, each tenant's rows written in its own scope (the database refuses a row of
        # another tenant), as one executemany through Core: the ORM's unit of work would cost more than the
        # gateway call.
        async with self._db.tenant_session(next(iter(by_org))) as session:
            for number, (org_id, rows) in enumerate(by_org.items()):
                if number:
                    await rescope(session, org_id)
                await session.execute(insert(UsageRecord), [_columns(row) for row in rows])

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            await self.flush()


def _transient(exc: BaseException) -> bool:
    """An error that may pass (a locked or restarting database, a dropped connection), not a refusal of
    the rows themselves (a constraint, a bad value)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | OSError
                      | TimeoutError)


def _columns(row: UsageRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in UsageRow.__slots__}


class MeteredChatModel(ChatModelWrapper):
    """Records one ``UsageRow`` per call (needs ``request.context.org_id``; calls without a tenant are
    not metered) and reports it to ``observe`` (metrics); ``first_token`` is told the serving model and
    the seconds to the call's first token or tool-call delta (not for cache hits)."""

    def __init__(self, inner: ChatModel, recorder: UsageRecorder, entries: Mapping[str, CatalogueEntry],
                 counter: TokenCounter, *, observe: Callable[[UsageRow], None] | None = None,
                 first_token: Callable[[str, float], None] | None = None) -> None:
        super().__init__(inner)
        self._recorder = recorder
        self._entries = entries
        self._counter = counter
        self._observe = observe
        self._first_token = first_token

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ports.ChatEvent, None]:
        started = time.perf_counter()
        tally = CallTally()
        first: float | None = None
        try:
            async with self._open(request) as events:
                async for event in events:
                    tally.see(event)
                    if first is None and isinstance(event, _FIRST_OUTPUT):
                        first = time.perf_counter() - started
                    yield event
        finally:
            self._record(request, tally, (time.perf_counter() - started) * 1000)
            if first is not None and self._first_token is not None and not tally.cached:
                self._first_token(tally.model or request.model or self.name, first)

    def _record(self, request: ChatRequest, tally: CallTally, latency_ms: float) -> None:
        context = request.context
        if tally.model is None and tally.outcome is None:
            tally.outcome = "cancelled"
        model = tally.model or request.model or self.name
        estimated = tally.usage is None and tally.outcome != "cache_hit"
        usage = tally.usage_of(request, self._counter)
        outcome = tally.outcome or "cancelled"
        cost = 0.0 if outcome == "cache_hit" else price_of(self._entries, model).cost(
            usage.prompt_tokens, usage.completion_tokens)
        row = UsageRow(
            org_id=context.org_id or "", user_id=context.user_id, api_key_id=context.api_key_id,
            endpoint=context.endpoint, provider=tally.provider or "", model=model,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost_usd=cost,
            latency_ms=latency_ms, outcome=outcome, estimated=estimated,
        )
        if self._observe is not None:
            self._observe(row)
        if context.org_id:
            self._recorder.record(row)


class CallTally:
    """What one call produced, read off its events: the model and provider that served, the provider's
    usage if it gave one, the outcome (``ok``, ``cache_hit`` or an error code; ``None`` while running) and
    the output text, for an offline count. Metering and budgeting both charge from it."""

    __slots__ = ("model", "outcome", "provider", "texts", "usage")

    def __init__(self) -> None:
        self.model: str | None = None
        self.provider: str | None = None
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self.texts: list[str] = []

    def see(self, event: ports.ChatEvent) -> None:
        match event:
            case ports.Token(text=text):
                self.texts.append(text)
            case ports.ToolCallDelta(name=name, arguments=arguments):
                self.texts.append((name or "") + arguments)
            case ports.Start(model=model, provider=provider):
                self.model, self.provider = model, provider
            case Usage():
                self.usage = event
            case ports.Done(model=model, provider=provider, cached=cached):
                # Start (from the router) names the catalogue entry, which is what prices are keyed by.
                self.model, self.provider = self.model or model, self.provider or provider
                self.outcome = "cache_hit" if cached else "ok"
            case ports.ErrorEvent(code=code, model=model, provider=provider):
                self.model = self.model or model or None
                self.provider = self.provider or provider or None
                self.outcome = code

    @property
    def cached(self) -> bool:
        return self.outcome == "cache_hit"

    def usage_of(self, request: ChatRequest, counter: TokenCounter) -> Usage:
        """The provider's usage, else an offline count: the provider read the prompt if anything came
        back; a failure before any output costs nothing."""
        if self.usage is not None:
            return self.usage
        answered = bool(self.texts) or self.outcome == "ok"
        return Usage(prompt_tokens=counter.count_messages(request.messages) if answered else 0,
                     completion_tokens=counter.count("".join(self.texts)))
