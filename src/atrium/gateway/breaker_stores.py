"""The BreakerStore backends: where circuit breaker state lives (the state machine: ``breaker.py``).

:class:`InProcessBreakerStore` for one process (no locks: the event loop runs one transition at a time),
:class:`RedisBreakerStore` for replicas, where each transition is one Lua script (one round trip) on a hash
per provider, timed by the wall clock that replicas share: a breaker opened on one replica refuses calls on
every other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as redis

from atrium.gateway.ports import BreakerOutcome, BreakerSnapshot, BreakerState, Permit
from atrium.gateway.settings import BreakerSettings


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

    async def record(self, name: str, outcome: BreakerOutcome, settings: BreakerSettings, now: float) -> BreakerState:
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

    async def record(self, name: str, outcome: BreakerOutcome, settings: BreakerSettings, now: float) -> BreakerState:
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
