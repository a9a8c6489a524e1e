"""The hub: this process's sockets per organisation, their limits, presence, and the delivery of events.

Every event is published on the PubSub port (``publish.PubSubPublisher``) and every process's hub follows
that channel (``start``), so one path serves one process and many replicas alike. Delivering an event to
the sockets of its organisation encodes it once and ``offer``s it to each allowed socket's outbox: it
never waits for a socket, so a slow client cannot hold up the others (``outbox``).

Who receives an event: a socket of the event's organisation whose principal may read the event's object
(``Audience``, checked with the collection rule ``may_read_collection``), subscribed to its ``topic`` if it
has one, and not the socket that caused it (``skip``).

Presence (``online``, ``presence`` join/leave events, for the whole organisation) is the union of this
process's sockets and what the other processes announce: a join when their first socket of a user opens,
a leave when their last one closes, and every ``beat_s`` a beat listing who they hold (entries not renewed
for three beats are dropped, so a replica that died leaves no ghosts). A hub that starts asks the others
for a beat at once (``presence.hello``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from atrium.accounts.ownership import may_read_collection
from atrium.accounts.principal import Principal
from atrium.errors import RateLimited
from atrium.realtime.outbox import Outbox
from atrium.realtime.ports import Audience, Event
from atrium.realtime.publish import CHANNEL, PubSubPublisher, decode
from atrium.realtime.settings import RealtimeSettings
from atrium.store.ports import PubSub, follow
from atrium.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

_JOIN, _LEAVE, _BEAT, _HELLO = "presence.join", "presence.leave", "presence.beat", "presence.hello"
_INTERNAL = frozenset((_JOIN, _LEAVE, _BEAT, _HELLO))


class TooManySockets(RateLimited):
    """A socket over ``realtime.max_sockets_per_user`` or ``max_sockets_per_org`` (closed with 4429)."""

    code = "too_many_sockets"


@dataclass(eq=False)
class Member:
    """One open socket as the hub sees it; ``principal`` is renewed when the connection re-authenticates."""

    org_id: str
    presence_id: str  # the user, else ``key:<id>`` for a key acting as no user
    name: str
    principal: Principal
    outbox: Outbox
    socket_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    topics: set[str] = field(default_factory=set)


class Hub:
    """See the module docstring."""

    def __init__(self, pubsub: PubSub, settings: RealtimeSettings, *, beat_s: float | None = None,
                 metrics: Metrics | None = None) -> None:
        self.pubsub = pubsub
        self.settings = settings
        self.publisher = PubSubPublisher(pubsub)
        self.origin = uuid.uuid4().hex
        self.beat_s = beat_s or settings.heartbeat_s
        self._members: dict[str, dict[str, Member]] = {}  # org -> socket id -> member
        self._local: Counter[tuple[str, str]] = Counter()  # (org, presence id) -> sockets here
        self._names: dict[tuple[str, str], str] = {}
        self._remote: dict[tuple[str, str], dict[str, float]] = {}  # (org, presence id) -> origin -> expiry
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = metrics
        if metrics is not None:
            metrics.ws_sockets.set_function(self.sockets)

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(follow(self.pubsub, CHANNEL, self._on_message)),
                       asyncio.create_task(self._beat())]
        await self._publish_internal(_HELLO, "", {})

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- sockets -------------------------------------------------------------------------------------------

    def join(self, principal: Principal, presence_id: str, name: str, outbox: Outbox) -> Member:
        """Register a socket; ``RateLimited`` when its user or organisation holds as many as allowed."""
        org = self._members.setdefault(principal.org_id, {})
        if len(org) >= self.settings.max_sockets_per_org:
            raise TooManySockets(f"The organisation has {len(org)} open sockets, the most allowed.")
        key = (principal.org_id, presence_id)
        if self._local[key] >= self.settings.max_sockets_per_user:
            raise TooManySockets(f"{self._local[key]} sockets are open for this user, the most allowed.")
        member = Member(principal.org_id, presence_id, name, principal, outbox)
        was_present = self._present(key)
        org[member.socket_id] = member
        self._local[key] += 1
        self._names[key] = name
        if self._local[key] == 1:
            self._spawn(self._publish_internal(_JOIN, principal.org_id, {"id": presence_id, "name": name}))
        if not was_present:
            self._deliver_presence("join", principal.org_id, presence_id, name, skip=member.socket_id)
        return member

    def leave(self, member: Member) -> None:
        org = self._members.get(member.org_id, {})
        if org.pop(member.socket_id, None) is None:
            return
        if not org:
            self._members.pop(member.org_id, None)
        key = (member.org_id, member.presence_id)
        self._local[key] -= 1
        if self._local[key] <= 0:
            del self._local[key]
            self._spawn(self._publish_internal(_LEAVE, member.org_id, {"id": member.presence_id}))
            if not self._present(key):
                self._deliver_presence("leave", member.org_id, member.presence_id, member.name)
                self._names.pop(key, None)

    def online(self, org_id: str) -> list[dict[str, str]]:
        """Who is online in the organisation (on any process), by id."""
        now = time.monotonic()
        ids = {pid for (org, pid), count in self._local.items() if org == org_id and count > 0}
        ids |= {pid for (org, pid), origins in self._remote.items()
                if org == org_id and any(expiry > now for expiry in origins.values())}
        return [{"id": pid, "name": self._names.get((org_id, pid), "")} for pid in sorted(ids)]

    def sockets(self, org_id: str | None = None) -> int:
        if org_id is not None:
            return len(self._members.get(org_id, {}))
        return sum(len(org) for org in self._members.values())

    # -- delivery ------------------------------------------------------------------------------------------

    def deliver(self, event: Event) -> int:
        """Offer ``event`` to every allowed socket of its organisation here; never waits. Returns how many."""
        members = self._members.get(event.org_id)
        if not members:
            return 0
        text = json.dumps({"type": event.type, "id": None, **event.data, "ts": event.ts},
                          ensure_ascii=False, separators=(",", ":"))
        count = dropped = 0
        for member in list(members.values()):
            if member.socket_id == event.skip or (event.topic is not None and event.topic not in member.topics):
                continue
            if may_read_collection(event.audience, member.principal):
                count += 1
                if not member.outbox.offer(text):
                    dropped += 1
        if self.metrics is not None and count:
            self.metrics.ws_events.labels("delivered").inc(count - dropped)
            if dropped:
                self.metrics.ws_events.labels("dropped").inc(dropped)
        return count

    def _on_message(self, text: str) -> None:
        try:
            event = decode(text)
        except (ValueError, KeyError, TypeError):
            log.warning("a malformed realtime event was ignored")
            return
        if event.type in _INTERNAL:
            if event.origin != self.origin:
                self._on_presence(event)
            return
        self.deliver(event)

    # -- presence across processes -------------------------------------------------------------------------

    def _present(self, key: tuple[str, str]) -> bool:
        if self._local.get(key, 0) > 0:
            return True
        now = time.monotonic()
        return any(expiry > now for expiry in self._remote.get(key, {}).values())

    def _on_presence(self, event: Event) -> None:
        assert event.origin is not None
        if event.type == _HELLO:
            self._spawn(self._publish_beat())
            return
        expiry = time.monotonic() + 3 * self.beat_s
        if event.type == _BEAT:
            for org_id, users in event.data.get("orgs", {}).items():
                for pid, name in users:
                    self._remote_join(org_id, pid, name, event.origin, expiry)
            return
        pid, org_id = str(event.data.get("id", "")), event.org_id
        if event.type == _JOIN:
            self._remote_join(org_id, pid, str(event.data.get("name", "")), event.origin, expiry)
        else:
            key = (org_id, pid)
            origins = self._remote.get(key, {})
            origins.pop(event.origin, None)
            if not origins:
                self._remote.pop(key, None)
            if not self._present(key):
                self._deliver_presence("leave", org_id, pid, self._names.pop(key, ""))

    def _remote_join(self, org_id: str, pid: str, name: str, origin: str, expiry: float) -> None:
        key = (org_id, pid)
        was_present = self._present(key)
        self._remote.setdefault(key, {})[origin] = expiry
        self._names.setdefault(key, name)
        if not was_present:
            self._deliver_presence("join", org_id, pid, name)

    def _expire(self) -> None:
        now = time.monotonic()
        for key, origins in list(self._remote.items()):
            for origin, expiry in list(origins.items()):
                if expiry <= now:
                    del origins[origin]
            if not origins:
                del self._remote[key]
                if not self._present(key):
                    self._deliver_presence("leave", key[0], key[1], self._names.pop(key, ""))

    def _deliver_presence(self, change: str, org_id: str, pid: str, name: str, *, skip: str | None = None) -> None:
        self.deliver(Event(org_id, "presence", {"event": change, "user": {"id": pid, "name": name}},
                           Audience.org(), skip=skip, ts=time.time()))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)
            try:
                self._expire()
                await self._publish_beat()
            except Exception:
                log.warning("presence beat failed", exc_info=True)

    async def _publish_beat(self) -> None:
        orgs: dict[str, list[tuple[str, str]]] = {}
        for (org_id, pid), count in self._local.items():
            if count > 0:
                orgs.setdefault(org_id, []).append((pid, self._names.get((org_id, pid), "")))
        await self._publish_internal(_BEAT, "", {"orgs": orgs})

    async def _publish_internal(self, kind: str, org_id: str, data: dict[str, object]) -> None:
        try:
            await self.publisher.publish(Event(org_id, kind, dict(data), Audience.org(), origin=self.origin))
        except Exception:
            log.warning("presence could not be published", exc_info=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.append(task)
        task.add_done_callback(lambda done: self._tasks.remove(done) if done in self._tasks else None)
