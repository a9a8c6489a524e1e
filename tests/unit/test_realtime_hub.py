"""The realtime hub and outbox without sockets: an outbox drops and counts what finds it full and says so
(``lagged``), overflows after ``max_dropped``; the hub delivers by audience and topic, refuses sockets over
its limits, and presence crosses hubs over a shared PubSub, a dead hub's users leaving after three beats."""

from __future__ import annotations

import asyncio
import json

import pytest

from atrium.accounts.ownership import Owner
from atrium.accounts.principal import Principal
from atrium.realtime.hub import Hub, TooManySockets
from atrium.realtime.outbox import Outbox
from atrium.realtime.ports import Audience, Event
from atrium.realtime.publish import flow_prompt
from atrium.realtime.settings import RealtimeSettings
from atrium.store.pubsub import InProcessPubSub


class Sink:
    """What a socket would have been sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def types(self) -> list[object]:
        return [event["type"] for event in self.sent]


def outbox(sink: Sink, size: int = 8, max_dropped: int = 100) -> Outbox:
    return Outbox(sink.send, sink.close, size=size, max_dropped=max_dropped)


async def test_a_full_outbox_drops_counts_and_says_so_then_overflows() -> None:
    sink = Sink()
    box = outbox(sink, size=8, max_dropped=5)
    offered = [box.offer(json.dumps({"type": "e", "n": n})) for n in range(12)]
    assert offered == [True] * 8 + [False] * 4 and box.dropped == 4 and not box.overflowed.is_set()
    box.offer("{}")
    assert box.overflowed.is_set()
    writer = asyncio.create_task(box.run())
    await asyncio.wait_for(box.put_close(4008, "slow"), 5)
    await asyncio.wait_for(writer, 5)
    assert sink.types()[:9] == ["lagged"] + ["e"] * 8 and sink.sent[0]["dropped"] == 5
    assert sink.closed == (4008, "slow")


def member_of(hub: Hub, org: str, user: str, sink: Sink, **principal: object) -> object:
    return hub.join(Principal(org_id=org, user_id=user, role="member", **principal),  # type: ignore[arg-type]
                    user, user.title(), outbox(sink, size=64))


async def test_the_hub_delivers_by_audience_topic_and_organisation() -> None:
    hub = Hub(InProcessPubSub(), RealtimeSettings())
    ann, bob, eve = Sink(), Sink(), Sink()
    ann_member = member_of(hub, "org1", "ann", ann)
    member_of(hub, "org1", "bob", bob)
    member_of(hub, "org2", "eve", eve)
    assert hub.deliver(Event("org1", "x", {}, Audience.owner(Owner("ann", None)))) == 1
    assert hub.deliver(Event("org1", "x", {}, Audience.org())) == 2
    assert hub.deliver(Event("org1", "x", {}, Audience("division", "d1"))) == 0  # nobody of that division
    assert hub.deliver(Event("org1", "x", {}, Audience.org(), topic="thread:t")) == 0  # nobody subscribed
    ann_member.topics.add("thread:t")  # type: ignore[attr-defined]
    assert hub.deliver(Event("org1", "x", {}, Audience.org(), topic="thread:t")) == 1
    assert hub.deliver(Event("org1", "x", {}, Audience.org(), skip=ann_member.socket_id)) == 1  # type: ignore[attr-defined]
    prompt = flow_prompt("org1", Owner("bob", None), flow_id="f", flow="project", prompt={"question": "Title?"})
    assert hub.deliver(prompt) == 1
    assert hub.deliver(Event("org3", "x", {}, Audience.org())) == 0


async def test_sockets_over_the_limits_are_refused() -> None:
    hub = Hub(InProcessPubSub(), RealtimeSettings(max_sockets_per_user=2, max_sockets_per_org=3))
    member_of(hub, "org1", "ann", Sink())
    member_of(hub, "org1", "ann", Sink())
    with pytest.raises(TooManySockets):
        member_of(hub, "org1", "ann", Sink())
    member_of(hub, "org1", "bob", Sink())
    with pytest.raises(TooManySockets):
        member_of(hub, "org1", "cy", Sink())
    member_of(hub, "org2", "cy", Sink())  # another organisation counts its own


async def test_presence_crosses_hubs_and_a_dead_hubs_users_leave_after_three_beats() -> None:
    pubsub = InProcessPubSub()
    here, there = Hub(pubsub, RealtimeSettings(), beat_s=0.1), Hub(pubsub, RealtimeSettings(), beat_s=0.1)
    await here.start()
    await there.start()
    try:
        watcher = Sink()
        writer = asyncio.create_task(member_of(here, "org1", "ann", watcher).outbox.run())  # type: ignore[attr-defined]
        member_of(there, "org1", "bob", Sink())
        await asyncio.sleep(0.05)
        assert [user["id"] for user in here.online("org1")] == ["ann", "bob"]
        assert [(event["event"], event["user"]) for event in watcher.sent] == [("join", {"id": "bob", "name": "Bob"})]
        await there.aclose()  # dies without a word: no leave
        await asyncio.sleep(0.5)
        assert [user["id"] for user in here.online("org1")] == ["ann"]
        assert watcher.sent[-1]["event"] == "leave" and watcher.sent[-1]["user"]["id"] == "bob"  # type: ignore[index]
        writer.cancel()
    finally:
        await here.aclose()
