"""The realtime port: an ``Event`` about an object, the ``Audience`` that may receive it, and the
``EventPublisher`` the rooms that change objects (conversations, artifacts, jobs, flows) are given.

An audience is the object's read rule, the same as a collection's (``accounts.ownership``): ``org``
(everyone in the organisation), ``division`` (its members and the organisation's unscoped admins) or
``private`` (the owner: a user, or a key that acts as no user). The hub checks it against every socket's
principal before delivering, so an event never reaches someone who could not read its object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from atrium.accounts.ownership import Owner

log = logging.getLogger(__name__)

Visibility = Literal["org", "division", "private"]


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may receive an event (see the module docstring); duck-types ``CollectionAccess``."""

    visibility: Visibility
    division_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None

    @classmethod
    def org(cls) -> Audience:
        return cls("org")

    @classmethod
    def owner(cls, owner: Owner) -> Audience:
        return cls("private", None, owner.user_id, owner.api_key_id)

    @classmethod
    def of(cls, row: Any) -> Audience:
        """The audience of a row with an owner's columns and, if it has them, a visibility and a division
        (an artifact, an agent thread); a row without ``visibility`` (a conversation, a job) is private."""
        return cls(getattr(row, "visibility", "private"), getattr(row, "division_id", None), row.user_id,
                   row.api_key_id)


@dataclass(frozen=True, slots=True)
class Event:
    """One realtime event of organisation ``org_id``: ``type`` and ``data`` are what the client gets;
    ``topic`` (e.g. ``thread:<id>``) narrows it to the sockets subscribed to it; ``skip`` is the socket
    that caused it (a typing client does not hear itself)."""

    org_id: str
    type: str
    data: dict[str, Any]
    audience: Audience
    topic: str | None = None
    skip: str | None = None
    ts: float = field(default=0.0)  # set when published (seconds since the epoch)
    origin: str | None = None  # the hub (process) that published it, for presence bookkeeping


class EventPublisher(Protocol):
    """Publish an event to every process's sockets. Fire-and-forget: a lost event is never the truth
    (clients resynchronise with ``GET /api/v1/sync`` and the REST reads)."""

    async def publish(self, event: Event) -> None: ...


async def publish_quietly(publisher: EventPublisher | None, event: Event) -> None:
    """Publish, never failing the caller: the change it announces is already committed."""
    if publisher is None:
        return
    try:
        await publisher.publish(event)
    except Exception:
        log.warning("realtime event %r of org %s could not be published", event.type, event.org_id, exc_info=True)
