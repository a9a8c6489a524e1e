"""Circuit breakers, one per provider: stop calling a provider that keeps failing, try it again later.

States: ``closed`` (calls go through; ``failure_threshold`` consecutive failures open it), ``open``
(calls are refused until ``reset_timeout_s`` has passed since it opened), ``half_open`` (up to
``half_open_max_calls`` trial calls go through; a trial success closes it, a trial failure opens it
again). A trial that never reports back (its caller went away) frees its slot through ``release``; should
even that be lost, a new set of trials is allowed ``reset_timeout_s`` after the last one began.

The state lives in a ``BreakerStore`` (``gateway/ports.py``), which applies each transition atomically:
``InProcessBreakerStore`` for one process, ``RedisBreakerStore`` for replicas, where a breaker opened on one
replica refuses calls on every other (``gateway/breaker_stores.py``).

:class:`BreakerChatModel` puts a breaker in front of a model. What counts:

* failure: an ``ErrorEvent`` with ``retryable=True`` (5xx, timeouts, transport errors, cut streams), except
  ``rate_limited`` (the provider is up, only busy: the retry wrapper waits, the breaker stays out of it);
* success: ``Done``;
* neither: other errors (the request was at fault, e.g. too long a prompt), and a stream its consumer
  abandoned (cancelled, closed early) before the final event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable

from atrium.gateway.ports import (
    BreakerOutcome,
    BreakerSnapshot,
    BreakerState,
    BreakerStore,
    ChatEvent,
    ChatModel,
    ChatRequest,
    Done,
    ErrorEvent,
    Permit,
)
from atrium.gateway.settings import BreakerSettings
from atrium.gateway.wrapping import ChatModelWrapper

log = logging.getLogger(__name__)

ChangeListener = Callable[[str, BreakerState, BreakerState], None]  # (name, old state, new state)
_FAIL_OPEN = Permit(True, "closed")  # what a breaker answers when its store cannot be reached


class CircuitBreaker:
    """One provider's breaker: a name, its settings and a store (see the module docstring). ``clock``
    defaults to the store's. ``state`` is the state this process last saw, for free; ``snapshot()`` asks
    the store."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        store: BreakerStore,
        *,
        clock: Callable[[], float] | None = None,
        listeners: list[ChangeListener] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.state: BreakerState = "closed"
        self._store = store
        self._clock = clock or store.clock
        self._listeners = listeners if listeners is not None else []

    async def allow(self) -> bool:
        """True when a call may go through now (while half-open, this takes one of the trial slots)."""
        return (await self.permit()).allowed

    async def permit(self) -> Permit:
        """Like :meth:`allow`, also saying when to come back if refused. If the store cannot be reached the
        breaker fails open: an outage of Redis must not become an outage of every model."""
        try:
            permit = await self._store.acquire(self.name, self.settings, self._clock())
        except Exception:
            log.warning("Circuit breaker %r: store unavailable, letting the call through.", self.name,
                        exc_info=True)
            return _FAIL_OPEN
        self._saw(permit.state)
        return permit

    async def record_success(self) -> None:
        await self._record("success")

    async def record_failure(self) -> None:
        await self._record("failure")

    async def release(self) -> None:
        """The call ended with neither success nor failure: give back its trial slot if it had one."""
        await self._record("release")

    async def snapshot(self) -> BreakerSnapshot:
        return await self._store.snapshot(self.name, self.settings, self._clock())

    async def reset(self) -> None:
        await self._store.reset(self.name)
        self._saw("closed")

    async def _record(self, outcome: BreakerOutcome) -> None:
        try:
            state = await self._store.record(self.name, outcome, self.settings, self._clock())
        except Exception:
            log.warning("Circuit breaker %r: store unavailable, %s not recorded.", self.name, outcome,
                        exc_info=True)
            return
        self._saw(state)

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(name, old, new)`` when this process sees the state change (another replica's
        changes are seen at this replica's next call)."""
        self._listeners.append(listener)

    def _saw(self, state: BreakerState) -> None:
        if state != self.state:
            old, self.state = self.state, state
            for listener in self._listeners:
                listener(self.name, old, state)


class BreakerRegistry:
    """One :class:`CircuitBreaker` per provider name, made on first use, all on one store and settings."""

    def __init__(self, settings: BreakerSettings, store: BreakerStore, *,
                 clock: Callable[[], float] | None = None) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[ChangeListener] = []

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = CircuitBreaker(name, self._settings, self._store, clock=self._clock,
                                                            listeners=self._listeners)
        return breaker

    async def snapshots(self) -> list[BreakerSnapshot]:
        """Every breaker this registry made, by name (from the store, so other replicas' changes show)."""
        return [await self._breakers[name].snapshot() for name in sorted(self._breakers)]

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(name, old, new)`` whenever this process sees any of its breakers change state."""
        self._listeners.append(listener)


def counts_as_failure(event: ErrorEvent) -> bool:
    """Does this error say the provider is unwell (see the module docstring)?"""
    return event.retryable and event.code not in ("rate_limited", "circuit_open")


class BreakerChatModel(ChatModelWrapper):
    """Wrapper that asks ``breaker`` before calling the inner model and tells it how the call went. A
    refused call ends at once with ``ErrorEvent(code="circuit_open", retryable=False)`` (a fallback
    wrapper moves on; a retry wrapper does not hammer) without calling the inner model."""

    def __init__(self, inner: ChatModel, breaker: CircuitBreaker) -> None:
        super().__init__(inner)
        self._breaker = breaker

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        permit = await self._breaker.permit()
        if not permit.allowed:
            when = f"in {permit.retry_in_s:.1f} s" if permit.retry_in_s is not None else "later"
            yield ErrorEvent(
                code="circuit_open",
                message=f"Provider {self._breaker.name!r} failed repeatedly and its circuit breaker is "
                f"{permit.state.replace('_', '-')}: calls are refused; it will be tried again {when}.",
                retryable=False,
                model=self.name,
                provider=self._breaker.name,
            )
            return
        recorded = False
        try:
            async with self._open(request) as events:
                async for event in events:
                    if isinstance(event, Done):
                        recorded = True
                        await self._breaker.record_success()
                    elif isinstance(event, ErrorEvent):
                        recorded = True
                        if counts_as_failure(event):
                            await self._breaker.record_failure()
                        else:
                            await self._breaker.release()
                    yield event
                    if recorded:
                        return
        finally:
            if not recorded:  # abandoned (cancelled, closed early) or cut without a final event: no verdict
                await self._breaker.release()
