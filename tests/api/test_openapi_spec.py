"""The OpenAPI document describes every route fully: a response schema for each success status, and the
error statuses the route can answer, each with the error shape of its path. A new route without them
fails here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from atrium.app import create_app
from atrium.http.deps import get_principal, limit_rate
from atrium.http.errors import vendor_of
from tests.conftest import make_settings

ERROR_SCHEMAS = {"atrium": {"ErrorResponse", "AskErrorResponse"}, "openai": {"OpenAIErrorResponse"},
                 "anthropic": {"AnthropicErrorResponse"}}

# Answers in a 4xx/5xx status that are not errors: readiness says which checks fail.
NOT_ERRORS = {("/ready", "503")}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(make_settings(tmp_path_factory.mktemp("spec") / "data"))


@pytest.fixture(scope="module")
def spec(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def documented_routes(app: FastAPI) -> Iterator[tuple[APIRoute, str, str]]:
    """Each documented operation with its route as included (the routers' prefixes and dependencies)."""
    for context in iter_route_contexts(app.routes):
        route = context.route if isinstance(context.route, APIRoute) else context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in sorted(context.methods or ()):
                yield route, context.path_format, method.lower()


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def authenticated(route: APIRoute) -> bool:
    return any(call in (get_principal, limit_rate) for call in _calls(route.dependant))


def schema_name(response: dict[str, Any]) -> str | None:
    """The model of a response: its JSON body's, else (a stream that never answers JSON) its events'."""
    content = response.get("content", {})
    schema = content.get("application/json", content.get("text/event-stream", {})).get("schema", {})
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] or None


def test_every_route_is_in_the_spec(app: FastAPI, spec: dict[str, Any]) -> None:
    routes = list(documented_routes(app))
    assert len(routes) > 60
    for _route, path, method in routes:
        assert method in spec["paths"].get(path, {}), f"{method.upper()} {path} is not in the spec"


def test_every_success_status_has_a_response_schema(app: FastAPI, spec: dict[str, Any]) -> None:
    missing = []
    for _route, path, method in documented_routes(app):
        responses = spec["paths"][path][method]["responses"]
        successes = [status for status in responses if status.startswith("2")]
        assert successes, f"{method.upper()} {path} lists no success status"
        for status in successes:
            if status == "204":
                assert "content" not in responses[status], f"{method.upper()} {path}: a 204 has no body"
            elif schema_name(responses[status]) is None:
                missing.append(f"{method.upper()} {path} {status}")
    assert not missing, f"success answers without a response model: {missing}"


def test_every_route_lists_its_error_statuses(app: FastAPI, spec: dict[str, Any]) -> None:
    problems = []
    for route, path, method in documented_routes(app):
        responses = spec["paths"][path][method]["responses"]
        vendor = vendor_of(path)
        expected = set()
        if authenticated(route):
            expected |= {"401", "403"}
        if route.dependant.path_params:
            expected.add("404")
        if route.body_field is not None:
            expected |= {"400", "413"}
        if route.dependant.path_params or route.dependant.query_params or route.body_field is not None:
            # A malformed request: 422 on Atrium's paths; on the vendors' a 400 (as they answer), which their
            # ``4XX`` (any other client error) covers.
            expected.add("422" if vendor == "atrium" else "4XX")
        if vendor != "atrium":
            assert "422" not in responses, f"{method.upper()} {path}: the vendor paths never answer 422"
        for status in sorted(expected - set(responses)):
            problems.append(f"{method.upper()} {path}: no {status}")
        for status, response in responses.items():
            if (path, status) in NOT_ERRORS:
                continue
            if status[0] in "45" and schema_name(response) not in ERROR_SCHEMAS[vendor]:
                problems.append(f"{method.upper()} {path}: {status} is not in the {vendor} error shape")
    assert not problems, "\n".join(problems)


def test_no_fastapi_default_validation_error(spec: dict[str, Any]) -> None:
    """Atrium answers a malformed request with its own error shape, not FastAPI's ``HTTPValidationError``."""
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_streams_are_documented_as_event_streams(spec: dict[str, Any]) -> None:
    for path in ("/api/v1/chat/ask", "/v1/chat/completions", "/v1/messages"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert {"application/json", "text/event-stream"} <= set(content), path


def test_the_checks_catch_a_route_without_models(tmp_path: Path) -> None:
    """What the tests above rely on: a route added without ``response_model`` or ``responses`` shows up."""
    app = create_app(make_settings(tmp_path / "data"))

    @app.get("/api/v1/undocumented/{thing}")
    async def undocumented(thing: str) -> dict[str, str]:
        return {"thing": thing}

    spec = app.openapi()
    responses = spec["paths"]["/api/v1/undocumented/{thing}"]["get"]["responses"]
    assert schema_name(responses["200"]) is None
    assert "404" not in responses
    with pytest.raises(AssertionError):
        test_every_success_status_has_a_response_schema(app, spec)
    with pytest.raises(AssertionError):
        test_every_route_lists_its_error_statuses(app, spec)


def test_authenticated_routes_declare_how_to_send_credentials(app: FastAPI, spec: dict[str, Any]) -> None:
    """A client generated from the spec sends a credential: Bearer (an API key or an access token) or
    ``X-API-Key``, on every route that needs a caller and on no other."""
    schemes = spec["components"]["securitySchemes"]
    assert schemes["BearerAuth"]["type"] == "http" and schemes["BearerAuth"]["scheme"] == "bearer"
    assert (schemes["ApiKeyAuth"]["type"], schemes["ApiKeyAuth"]["in"], schemes["ApiKeyAuth"]["name"]) == (
        "apiKey", "header", "X-API-Key")
    anonymous = set()
    for route, path, method in documented_routes(app):
        operation = spec["paths"][path][method]
        if authenticated(route):
            assert operation.get("security") == [{"BearerAuth": []}, {"ApiKeyAuth": []}], f"{method} {path}"
        else:
            assert "security" not in operation, f"{method.upper()} {path} is anonymous"
            anonymous.add((method, path))
    assert {("get", "/health"), ("get", "/ready"), ("post", "/api/v1/auth/token"),
            ("post", "/api/v1/auth/refresh")} <= anonymous
    assert ("post", "/v1/chat/completions") not in anonymous and ("post", "/api/v1/chat/ask") not in anonymous
