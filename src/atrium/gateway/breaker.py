"""Circuit breakers, one per provider: stop calling a provider that keeps failing, try it again later.

States: ``closed`` (calls go through; ``failure_threshold`` consecutive failures open it), ``open``
(calls are refused until ``reset_timeout_s`` has passed since it opened), ``half_open`` (up to
``half_open_max_calls`` trial calls go through; a trial success closes it, a trial failure opens it
again). A trial that never reports back (its caller went away) frees its slot through ``release``; should
even that be lost, a new set of trials is allowed ``reset_timeout_s`` after the last one began.

The state lives in a :class:`BreakerStore`, which applies each transition atomically:
:class:`InProcessBreakerStore` for one process (no locks: the event loop runs one transition at a time),
:class:`RedisBreakerStore` for replicas, where each transition is one Lua script (one round trip) on a hash
per provider, timed by the wall clock that replicas share: a breaker opened on one replica refuses calls on
every other.

:class:`BreakerChatModel` puts a breaker in front of a model. What counts:

* failure: an ``ErrorEvent`` with ``retryable=True`` (5xx, timeouts, transport errors, cut streams), except
  ``rate_limited`` (the provider is up, only busy: the retry wrapper waits, the breaker stays out of it);
* success: ``Done``;
* neither: other errors (the request was at fault, e.g. too long a prompt), and a stream its consumer
  abandoned (cancelled, closed early) before the final event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as redis

from atrium.gateway.fallback import closing_stream
from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ErrorEvent
from atrium.settings import BreakerSettings

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "release"]
ChangeListener = Callable[[str, BreakerState, BreakerState], None]  # (name, old state, new state)


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer to "may I call?": ``retry_in_s`` says, when refused, how long until a trial may go."""

    allowed: bool
    state: BreakerState
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker as an admin page or metrics see it. ``opened_at`` is in the breaker's clock (monotonic
    in-process, Unix time with Redis); ``retry_in_s`` is ``None`` while closed."""

    name: str
    state: BreakerState
    failures: int
    opened_at: float | None
    retry_in_s: float | None


class BreakerStore(Protocol):
    """Where breaker state lives; each method is one atomic transition of the breaker called ``name``.

    ``now`` comes from the breaker's clock; ``clock`` is the one a breaker should use by default with this
    store (it must be shared by everyone sharing the store).
    """

    clock: Callable[[], float]

    async def acquire(self, name: str, settings: BreakerSettings, now: float) -> Permit:
        """May a call go through now? Takes a trial slot when half-open."""
        ...

    async def record(self, name: str, outcome: Outcome, settings: BreakerSettings, now: float) -> BreakerState:
        """Apply a call's outcome; returns the state after it."""
        ...

    async def snapshot(self, name: str, settings: BreakerSettings, now: float) -> BreakerSnapshot: ...

    async def reset(self, name: str) -> None:
        """Back to closed with no failures."""
        ...


class _Circuit:
    __slots__ = ("failures", "opened_at", "state", "trial_at", "trials")

    def __init__(self) -> None:
        self.state: BreakerState = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.trials = 0
        self.trial_at = 0.0


_ALLOWED_CLOSED = Permit(True, "closed")
_ALLOWED_TRIAL = Permit(True, "half_open")


class InProcessBreakerStore:
    """Breaker state in this process's memory (the embedded profile); timed by ``time.monotonic``."""

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.monotonic
        self._circuits: dict[str, _Circuit] = {}

    async def acquire(self, name: str, settings: BreakerSettings, now: float) -> Permit:
        circuit = self._circuits.get(name)
        if circuit is None or circuit.state == "closed":
            return _ALLOWED_CLOSED
        if circuit.state == "open":
            waited = now - circuit.opened_at
            if waited < settings.reset_timeout_s:
                return Permit(False, "open", settings.reset_timeout_s - waited)
            circuit.state, circuit.trials, circuit.trial_at = "half_open", 1, now
            return _ALLOWED_TRIAL
        if circuit.trials < settings.half_open_max_calls:
            circuit.trials += 1
            return _ALLOWED_TRIAL
        waited = now - circuit.trial_at
        if waited >= settings.reset_timeout_s:  # the trials never reported back: allow a fresh set
            circuit.trials, circuit.trial_at = 1, now
            return _ALLOWED_TRIAL
        return Permit(False, "half_open", settings.reset_timeout_s - waited)

    async def record(self, name: str, outcome: Outcome, settings: BreakerSettings, now: float) -> BreakerState:
        circuit = self._circuits.get(name)
        if circuit is None:
            if outcome != "failure":
                return "closed"
            circuit = self._circuits[name] = _Circuit()
        if outcome == "success":
            if circuit.state != "open":  # a late success of a call let through before it opened does not count
                circuit.state, circuit.failures, circuit.trials = "closed", 0, 0
        elif outcome == "failure":
            if circuit.state != "open":  # late failures of calls let through before it opened do not count
                circuit.failures += 1
                if circuit.state == "half_open" or circuit.failures >= settings.failure_threshold:
                    circuit.state, circuit.opened_at, circuit.trials = "open", now, 0
        elif circuit.state == "half_open" and circuit.trials > 0:
            circuit.trials -= 1
        return circuit.state

    async def snapshot(self, name: str, settings: BreakerSettings, now: float) -> BreakerSnapshot:
        circuit = self._circuits.get(name) or _Circuit()
        return _snapshot(name, circuit.state, circuit.failures, circuit.opened_at, circuit.trials,
                         circuit.trial_at, settings, now)

    async def reset(self, name: str) -> None:
        self._circuits.pop(name, None)


def _snapshot(name: str, state: BreakerState, failures: int, opened_at: float, trials: int, trial_at: float,
              settings: BreakerSettings, now: float) -> BreakerSnapshot:
    """What a caller would meet now (an open breaker past its timeout shows as half-open)."""
    if state == "closed":
        return BreakerSnapshot(name, "closed", failures, None, None)
    if state == "open":
        retry_in = settings.reset_timeout_s - (now - opened_at)
        if retry_in > 0:
            return BreakerSnapshot(name, "open", failures, opened_at, retry_in)
        return BreakerSnapshot(name, "half_open", failures, opened_at, 0.0)
    full = trials >= settings.half_open_max_calls
    retry_in = max(0.0, settings.reset_timeout_s - (now - trial_at)) if full else 0.0
    return BreakerSnapshot(name, "half_open", failures, opened_at, retry_in)


# One script for every transition, so the state machine is written once for Redis. KEYS[1]: the hash;
# ARGV: operation, now, failure_threshold, reset_timeout_s, half_open_max_calls. Returns
# {state, allowed (0/1), failures, opened_at, trials, trial_at, retry_in} with numbers as strings (Redis
# truncates Lua numbers to integers). A closed breaker with no failures has no key at all.
_TRANSITION = """
local key, op, now_text = KEYS[1], ARGV[1], ARGV[2]
local now, threshold, reset_after, max_trials = tonumber(now_text), tonumber(ARGV[3]), tonumber(ARGV[4]),
    tonumber(ARGV[5])
if op == 'reset' then
  redis.call('DEL', key)
  return {'closed', '1', '0', '0', '0', '0', ''}
end
local saved = redis.call('HMGET', key, 'state', 'failures', 'opened_at', 'trials', 'trial_at')
local state = saved[1] or 'closed'
local failures = tonumber(saved[2]) or 0
local opened_at = saved[3] or '0'
local trials = tonumber(saved[4]) or 0
local trial_at = saved[5] or '0'
local allowed, changed, retry_in = 1, false, ''
if op == 'acquire' then
  if state == 'open' then
    local waited = now - tonumber(opened_at)
    if waited < reset_after then
      allowed, retry_in = 0, tostring(reset_after - waited)
    else
      state, trials, trial_at, changed = 'half_open', 1, now_text, true
    end
  elseif state == 'half_open' then
    local waited = now - tonumber(trial_at)
    if trials < max_trials then
      trials, changed = trials + 1, true
    elseif waited >= reset_after then
      trials, trial_at, changed = 1, now_text, true
    else
      allowed, retry_in = 0, tostring(reset_after - waited)
    end
  end
elseif op == 'success' then
  if state == 'half_open' or (state == 'closed' and failures > 0) then
    state, failures, trials, changed = 'closed', 0, 0, true
  end
elseif op == 'failure' then
  if state ~= 'open' then
    failures, changed = failures + 1, true
    if state == 'half_open' or failures >= threshold then
      state, opened_at, trials = 'open', now_text, 0
    end
  end
elseif op == 'release' then
  if state == 'half_open' and trials > 0 then
    trials, changed = trials - 1, true
  end
end
if changed then
  if state == 'closed' and failures == 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'state', state, 'failures', failures, 'opened_at', opened_at, 'trials', trials,
               'trial_at', trial_at)
  end
end
return {state, tostring(allowed), tostring(failures), opened_at, tostring(trials), trial_at, retry_in}
"""


class RedisBreakerStore:
    """Breaker state shared by every replica through Redis: one hash per breaker (``prefix + name``),
    changed only by one Lua script, so each ``acquire``/``record`` is atomic and one round trip. Timed by
    the wall clock (``time.time``), which the replicas share. The client is built once by the caller and
    not closed here."""

    def __init__(self, client: redis.Redis, *, prefix: str = "atrium:breaker:") -> None:
        self.clock: Callable[[], float] = time.time
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_TRANSITION)

    async def acquire(self, name: str, settings: BreakerSettings, now: float) -> Permit:
        state, allowed, *_, retry_in = await self._run("acquire", name, settings, now)
        return Permit(allowed == "1", _state(state), float(retry_in) if retry_in else None)

    async def record(self, name: str, outcome: Outcome, settings: BreakerSettings, now: float) -> BreakerState:
        reply = await self._run(outcome, name, settings, now)
        return _state(reply[0])

    async def snapshot(self, name: str, settings: BreakerSettings, now: float) -> BreakerSnapshot:
        state, _, failures, opened_at, trials, trial_at, _ = await self._run("peek", name, settings, now)
        return _snapshot(name, _state(state), int(failures), float(opened_at), int(trials), float(trial_at),
                         settings, now)

    async def reset(self, name: str) -> None:
        await self._run("reset", name, None, 0.0)

    async def _run(self, op: str, name: str, settings: BreakerSettings | None, now: float) -> list[str]:
        args: list[str | int | float] = [op, repr(now)]
        if settings is not None:
            args += [settings.failure_threshold, repr(settings.reset_timeout_s), settings.half_open_max_calls]
        else:
            args += [1, "1", 1]
        reply = await self._script(keys=[self._prefix + name], args=args)
        return [item.decode() if isinstance(item, bytes) else str(item) for item in reply]


def _state(text: str) -> BreakerState:
    if text not in ("closed", "open", "half_open"):
        raise ValueError(f"Unknown breaker state {text!r} in the store.")
    return text  # type: ignore[return-value]


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
            return _ALLOWED_CLOSED
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

    async def _record(self, outcome: Outcome) -> None:
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


class BreakerChatModel:
    """Wrapper that asks ``breaker`` before calling the inner model and tells it how the call went. A
    refused call ends at once with ``ErrorEvent(code="circuit_open", retryable=False)`` (a fallback
    wrapper moves on; a retry wrapper does not hammer) without calling the inner model."""

    def __init__(self, inner: ChatModel, breaker: CircuitBreaker) -> None:
        self.name = inner.name
        self._inner = inner
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
            async with closing_stream(self._inner.stream(request)) as events:
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

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def aclose(self) -> None:
        await self._inner.aclose()
