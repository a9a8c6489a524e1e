"""What every ``atrium`` command shares: the console (stderr), loading the settings, running a coroutine
with Atrium's errors shown as one line, and the owner the offline commands act as."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import select

from atrium.accounts.bootstrap import ensure_admin
from atrium.accounts.principal import Principal
from atrium.errors import AppError
from atrium.settings import DeprecatedSettingWarning, Settings, unknown_env_vars

if TYPE_CHECKING:
    from atrium.container import Services

console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def load_settings(**overrides: Any) -> Settings:
    for name in unknown_env_vars(os.environ):
        console.print(f"[yellow]warning:[/yellow] {name} is not an Atrium setting and is ignored")
    try:
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", DeprecatedSettingWarning)
            settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]Invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from None
    for note in notes:
        if issubclass(note.category, DeprecatedSettingWarning):
            console.print(f"[yellow]warning:[/yellow] {note.message}")
        else:
            warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
    return settings


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except AppError as exc:
        console.print(f"[red]{exc.code}:[/red] {exc.message}")
        raise typer.Exit(1) from None


async def admin_principal(services: Services, org: str | None) -> Principal:
    """An owner of ``org`` (default: the first organisation), as the offline commands act; on a new data
    dir this bootstraps the admin key and prints it once."""
    from atrium.store.models import Organization
    from atrium.store.startup import startup_lock

    preset = services.settings.bootstrap_admin_key
    async with startup_lock(services.settings.resolved_migration_database_url):  # a server may start meanwhile
        created = await ensure_admin(services.db, preset_key=None if preset is None else preset.get_secret_value())
    if created is not None and created.raw_key is not None:
        console.print(f"\n  Atrium admin API key (shown once): [bold]{created.raw_key}[/bold]\n")
    async with services.db.system_session() as session:  # the tenant is what this looks up
        query = select(Organization.id).order_by(Organization.created_at).limit(1)
        if org is not None:
            query = select(Organization.id).where(Organization.id == org)
        org_id = await session.scalar(query)
    if org_id is None:
        raise AppError(f"no organisation {org!r}", code="not_found")
    return Principal(org_id=org_id, user_id=None, role="owner", via="cli")
