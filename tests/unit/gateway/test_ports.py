"""The request copy every model call makes (``with_route``) keeps every field but the route."""

from __future__ import annotations

import dataclasses

from atrium.gateway.catalogue import Route
from atrium.gateway.ports import CallContext, ChatMessage, ChatRequest, with_route


def test_with_route_keeps_every_other_field() -> None:
    request = ChatRequest(
        messages=(ChatMessage(role="user", content="hi"),), max_tokens=7, temperature=0.9, stop=("x",),
        model="m", tools=({"type": "function", "function": {"name": "f"}},), tool_choice="auto",
        response_format={"type": "json_object"}, extra={"seed": 1}, context=CallContext(org_id="o", task="qa"),
        stream=False, guarded=frozenset({"input"}))
    route = Route(name="r", entries=(), strategy="fallback")
    copied = with_route(request, route)
    assert copied.route is route
    assert copied == dataclasses.replace(request, route=route)
    for field in dataclasses.fields(ChatRequest):
        if field.name != "route":
            assert getattr(copied, field.name) is getattr(request, field.name), field.name
    assert with_route(copied, None).route is None


def test_with_route_knows_every_field() -> None:
    # with_route passes the fields by position: a new field must be added there too (then here).
    assert [field.name for field in dataclasses.fields(ChatRequest)] == [
        "messages", "max_tokens", "temperature", "stop", "model", "tools", "tool_choice", "response_format",
        "extra", "context", "stream", "route", "guarded"]
