"""The narrow dependencies of ``atrium.http.deps``: each answers one part of the container, is ``async``
(FastAPI would run a plain function in its thread pool) and refuses with ``NotReady`` (503) until the
lifespan has built the services."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any, get_args

import pytest

from atrium.errors import NotReady
from atrium.guard.budgets.admin import BudgetAdmin
from atrium.http import deps

PARTS = {"SettingsDep": "settings", "DatabaseDep": "db", "KnowledgeDep": "knowledge", "AccountsDep": "accounts",
         "SessionsDep": "sessions", "GatewayDep": "gateway", "MetricsDep": "metrics", "JobsDep": "jobs",
         "GuardDep": "guard"}


def _dependency(alias: Any) -> Any:
    """The function behind ``Annotated[T, Depends(function)]``."""
    return get_args(alias)[1].dependency


def _request(services: Any) -> Any:
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(services=services)))


@pytest.mark.parametrize(("alias", "part"), sorted(PARTS.items()))
async def test_each_dependency_answers_its_part(alias: str, part: str) -> None:
    marker = object()
    services = SimpleNamespace(**{part: marker})
    dependency = _dependency(getattr(deps, alias))
    assert inspect.iscoroutinefunction(dependency)
    assert await dependency(_request(services)) is marker


@pytest.mark.parametrize("alias", [*sorted(PARTS), "BudgetAdminDep", "ServicesDep"])
async def test_not_ready_until_the_services_are_built(alias: str) -> None:
    with pytest.raises(NotReady):
        await _dependency(getattr(deps, alias))(_request(None))


async def test_budget_admin_is_made_from_the_database_and_the_budget_guard() -> None:
    services = SimpleNamespace(db=object(), budgets=object())
    admin = await _dependency(deps.BudgetAdminDep)(_request(services))
    assert isinstance(admin, BudgetAdmin)
