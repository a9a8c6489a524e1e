"""The realtime events Atrium publishes, one builder each, and ``PubSubPublisher``: the EventPublisher
over the PubSub port (one channel, ``realtime``; every process's hub follows it and delivers to its own
sockets, so an event produced on one replica reaches the sockets of all of them).

Event types a client receives (``type``): ``message``, ``artifact``, ``job``, ``typing``, ``presence``,
``flow.prompt`` (and, per socket, the chat's ``token``... events, ``lagged``, ``ping``, ``error``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from atrium.accounts.ownership import Owner
from atrium.realtime.ports import Audience, Event, EventPublisher, publish_quietly
from atrium.store.ports import PubSub

CHANNEL = "realtime"
ARTIFACT_CHANGES = ("created", "updated", "deleted")


class PubSubPublisher:
    """Events as JSON on the ``realtime`` channel of the PubSub port (in-process, or Redis)."""

    def __init__(self, pubsub: PubSub, *, channel: str = CHANNEL) -> None:
        self.pubsub = pubsub
        self.channel = channel

    async def publish(self, event: Event) -> None:
        await self.pubsub.publish(self.channel, encode(event))


def encode(event: Event) -> str:
    audience = event.audience
    return json.dumps({"org": event.org_id, "type": event.type, "data": event.data, "topic": event.topic,
                       "skip": event.skip, "ts": event.ts or time.time(), "origin": event.origin,
                       "aud": [audience.visibility, audience.division_id, audience.user_id, audience.api_key_id]},
                      ensure_ascii=False, separators=(",", ":"))


def decode(text: str) -> Event:
    raw = json.loads(text)
    visibility, division_id, user_id, api_key_id = raw["aud"]
    return Event(org_id=raw["org"], type=raw["type"], data=raw["data"], topic=raw.get("topic"),
                 skip=raw.get("skip"), ts=float(raw["ts"]), origin=raw.get("origin"),
                 audience=Audience(visibility, division_id, user_id, api_key_id))


def message_event(org_id: str, conversation: Any, message: Any) -> Event:
    """A message stored (or finished) in a conversation: to the conversation's owner (conversations are
    private)."""
    return Event(org_id, "message", {
        "conversation_id": conversation.id,
        "message": {"id": message.id, "role": message.role, "status": message.status,
                    "content": message.content}}, Audience.of(conversation))


def artifact_event(change: str, artifact: Any, *, version: int | None = None, title: str | None = None) -> Event:
    """An artifact created, updated (a new version, another visibility) or deleted: to those who may read it."""
    assert change in ARTIFACT_CHANGES
    return Event(artifact.org_id, "artifact", {
        "change": change, "artifact": {"id": artifact.id, "kind": artifact.kind, "title": title,
                                       "visibility": artifact.visibility, "version": version,
                                       "conversation_id": artifact.conversation_id}}, Audience.of(artifact))


def job_event(job: Any, *, status: str, progress: float | None, error: str | None = None) -> Event:
    """A job's progress or end: to its owner (jobs are private)."""
    return Event(job.org_id, "job", {"job": {"id": job.id, "kind": job.kind, "status": status,
                                             "progress": progress, "error": error}}, Audience.of(job))


def flow_prompt(org_id: str, owner: Owner, *, flow_id: str, flow: str, prompt: dict[str, Any]) -> Event:
    """A guided flow waits for its user's answer (``flow.answer`` over the socket or REST): to the flow's
    owner only, with the prompt as the flow's own ``flow.prompt`` reply carries it."""
    return Event(org_id, "flow.prompt", {"flow_id": flow_id, "flow": flow, "prompt": prompt}, Audience.owner(owner))


def job_watcher(events: EventPublisher) -> Callable[[Any], Awaitable[None]]:
    """The job queue's watcher (``jobs/ports.py``) that publishes each change of a job as a ``job`` event."""

    async def publish(job: Any) -> None:
        await publish_quietly(events, job_event(job, status=job.status, progress=job.progress, error=job.error))

    return publish
