"""What the OpenAPI document says beyond what FastAPI derives from the routes: how a caller authenticates.

Every route that needs a caller (it depends on ``get_principal``, directly or through ``limit_rate`` or a
role check) lists two alternative security schemes, so a client generated from ``/openapi.json`` sends
credentials: ``Authorization: Bearer <API key or access token>`` (what the OpenAI SDKs send) or
``X-API-Key: <API key>`` (what the Anthropic and LangGraph SDKs send). Anonymous routes (health, readiness,
metrics, the login and token routes) list none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from atrium.http.deps import get_principal, limit_rate

BEARER = "BearerAuth"
API_KEY = "ApiKeyAuth"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {"type": "http", "scheme": "bearer",
             "description": "An Atrium API key (`atr_...`) or an access token from `POST /api/v1/auth/token`."},
    API_KEY: {"type": "apiKey", "in": "header", "name": "X-API-Key",
              "description": "An Atrium API key (`atr_...`), for clients that send `X-API-Key` "
                             "(Anthropic's and LangGraph's SDKs)."},
}
# Either scheme will do (a list of requirement objects is an "or").
EITHER_SCHEME: list[dict[str, list[str]]] = [{BEARER: []}, {API_KEY: []}]
_AUTHENTICATING = (get_principal, limit_rate)


def install_security_schemes(app: FastAPI, extra_schemas: Sequence[type[BaseModel]] = ()) -> None:
    """Make ``app.openapi()`` declare the security schemes and apply them to the authenticated routes.
    ``extra_schemas``: models that only non-JSON answers refer to (``#/components/schemas/<name>``, e.g. the
    events of a Server-Sent Events stream), which FastAPI would not list by itself."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        spec = generate()  # cached by FastAPI until the routes change
        components = spec.setdefault("components", {})
        if "securitySchemes" not in components:
            components["securitySchemes"] = SECURITY_SCHEMES
            schemas = components.setdefault("schemas", {})
            for model in extra_schemas:
                schemas.setdefault(model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}"))
            for path, method in authenticated_operations(app):
                operation = spec["paths"].get(path, {}).get(method)
                if operation is not None:
                    operation["security"] = EITHER_SCHEME
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def authenticated_operations(app: FastAPI) -> Iterator[tuple[str, str]]:
    """``(path, method)`` of every documented operation that needs a caller."""
    for context in iter_route_contexts(app.routes):
        route = context.route if isinstance(context.route, APIRoute) else context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema or context.path_format is None:
            continue
        if any(call in _AUTHENTICATING for call in _calls(route.dependant)):
            for method in context.methods or ():
                yield context.path_format, method.lower()


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)
