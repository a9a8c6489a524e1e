"""Reading Server-Sent Events with their ids, from a whole body or from a live response."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import make_settings

# Quick heartbeats, so an abandoned stream is noticed within half a second.
FAST_LEASES = {"heartbeat_s": 0.1, "lease_s": 0.5}


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    data: dict[str, Any]


def _event(fields: dict[str, list[str]]) -> Event | None:
    if "event" not in fields or "data" not in fields:
        return None
    return Event(int(fields["id"][0]), fields["event"][0], json.loads("\n".join(fields["data"])))


def _line(fields: dict[str, list[str]], line: str) -> None:
    if line.startswith(":"):  # a comment (sse-starlette's ping)
        return
    key, _, value = line.partition(":")
    fields.setdefault(key, []).append(value[1:] if value.startswith(" ") else value)


def parse_events(body: str) -> list[Event]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            _line(fields, line)
        event = _event(fields)
        if event is not None:
            events.append(event)
    return events


async def read_events(response: httpx.Response, *, until: Callable[[list[Event]], bool]) -> list[Event]:
    """Events of a live response until ``until(events)`` holds (then the caller hangs up) or it ends."""
    events: list[Event] = []
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line:
            _line(fields, line)
            continue
        event = _event(fields)
        fields = {}
        if event is not None:
            events.append(event)
            if until(events):
                break
    return events


def tokens_of(events: list[Event]) -> str:
    return "".join(event.data["text"] for event in events if event.name == "token")


def resume_path(meta: dict[str, Any]) -> str:
    return f"/api/v1/conversations/{meta['conversation_id']}/messages/{meta['message_id']}/stream"


def stream_settings(data_dir: Any, **overrides: Any) -> Any:
    return make_settings(data_dir, streams=FAST_LEASES, **overrides)
