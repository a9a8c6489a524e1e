"""``atrium users ...`` and ``atrium keys ...``: account administration from a shell on the server.

The commands work offline, straight against the configured database (like ``atrium ingest``), acting as
an owner of the organisation (``--org``; by default the first one, or, for a command naming a user or a
key, that user's home organisation or that key's). They run the same use cases as the admin API
(``atrium.accounts.admin``), so the same rules hold and every change is audited (``details.via = "cli"``).

A revocation made here is announced on the pub/sub channel: with ``ATRIUM_REDIS_URL`` set, every running
replica drops the key at once; without Redis (the embedded profile), the server is another process and
refuses the key once its cache entry expires (``auth.key_cache_ttl_s``, 10 s by default).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import select

from atrium.accounts.admin import AccountAdmin, KeySpec, UserChanges, administer
from atrium.accounts.admin_base import Page
from atrium.accounts.admin_views import created_key_view, key_view, member_view
from atrium.accounts.passwords import MAX_PASSWORD_CHARS
from atrium.accounts.principal import Principal
from atrium.cli_common import admin_principal, console, load_settings, run_async
from atrium.errors import InvalidRequest, NotFound
from atrium.settings import Settings
from atrium.store.models import ApiKey, User
from atrium.telemetry.logging import configure_logging

users_app = typer.Typer(help="Users of an organisation: create, list, set-role, disable, enable.",
                        no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
T = TypeVar("T")

MIN_PASSWORD_CHARS = 8


class RoleOption(StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"
    viewer = "viewer"


OrgOption = Annotated[str | None, typer.Option("--org", help="Organisation id (default: see the command's help).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DivisionOption = Annotated[str | None, typer.Option("--division", help="Division id or name.")]


def _run(work: Callable[[Settings], Awaitable[T]]) -> T:
    settings = load_settings()
    configure_logging("warning", settings.telemetry.log_format)
    return run_async(lambda: work(settings))


@asynccontextmanager
async def _admin(settings: Settings, org: str | None, *, user_email: str | None = None,
                 key_id: str | None = None) -> AsyncIterator[tuple[AccountAdmin, str]]:
    """An ``AccountAdmin`` acting as an owner of the organisation: ``org``, else the home organisation of
    ``user_email`` or the organisation of ``key_id``, else the first one (created on a new data dir)."""
    from atrium.container import build_services, close_services, migrate

    await migrate(settings)
    services = await build_services(settings)
    try:
        org_id = (await admin_principal(services, None)).org_id  # on a new data dir, the first start too
        if org is None and (user_email is not None or key_id is not None):
            async with services.db.system_session() as session:
                org = await session.scalar(
                    select(User.org_id).where(User.email == user_email.strip().lower()) if user_email is not None
                    else select(ApiKey.org_id).where(ApiKey.id == key_id))
            if org is None:
                raise NotFound(f"No user with the email {user_email!r}." if user_email is not None
                               else f"No API key {key_id!r}.")
        if org is not None:
            org_id = (await admin_principal(services, org)).org_id
        actor = Principal(org_id=org_id, user_id=None, role="owner", via="cli")
        async with administer(services.db, services.authenticator, services.sessions.passwords, actor) as admin:
            yield admin, org_id
    finally:
        await close_services(services, reconcile=False)


async def _division(admin: AccountAdmin, org_id: str, ref: str | None) -> str | None:
    return None if ref is None else (await admin.find_division(org_id, ref)).id


async def _every_item(fetch: Callable[[int], Awaitable[Page[T]]]) -> list[T]:
    """All items of a paged admin listing, ``fetch(offset)`` page by page."""
    items: list[T] = []
    offset: int | None = 0
    while offset is not None:
        page = await fetch(offset)
        items.extend(page.items)
        offset = page.next_offset
    return items


def _read_password(from_stdin: bool, prompt: bool) -> str | None:
    if from_stdin and prompt:
        raise typer.BadParameter("give --password-stdin or --password-prompt, not both")
    if not (from_stdin or prompt):
        return None
    password = (sys.stdin.readline().rstrip("\r\n") if from_stdin
                else typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise typer.BadParameter(f"the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    return password


def _print_users(users: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(users, indent=2))
        return
    for user in users:
        status = "disabled" if user["disabled"] else "active"
        print(f"{user['id']}  {user['email']:<40} {user['role']:<7} {status:<8} {user['division_id'] or '-'}  "
              f"{user['name']}")


# -- users -----------------------------------------------------------------------------------------------

@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The user's email (their login).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    role: Annotated[RoleOption, typer.Option(help="Role in the organisation.")] = RoleOption.member,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    password_prompt: Annotated[bool, typer.Option("--password-prompt", help="Ask for the password.")] = False,
    org: OrgOption = None,
    division: DivisionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user (default organisation: the first). Without a password they sign in with API keys only."""
    password = _read_password(password_stdin, password_prompt)

    async def work(settings: Settings) -> dict[str, Any]:
        async with _admin(settings, org) as (admin, org_id):
            member = await admin.create_user(org_id, email=email, name=_checked_name(name), role=role.value,
                                             password=password, division_id=await _division(admin, org_id, division))
            return member_view(member, org_id)

    _print_users([_run(work)], as_json)


@users_app.command("list")
def users_list(org: OrgOption = None, as_json: JsonOption = False,
               service: Annotated[bool, typer.Option("--service", help="List service accounts instead.")] = False,
               ) -> None:
    """List the users of an organisation (default: the first)."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _admin(settings, org) as (admin, org_id):
            members = await _every_item(
                lambda offset: admin.list_users(org_id, service=service, limit=200, offset=offset))
            return [member_view(member, org_id) for member in members]

    _print_users(_run(work), as_json)


@users_app.command("set-role")
def users_set_role(email: str, role: RoleOption, org: OrgOption = None) -> None:
    """Change a user's role in an organisation (default: their home organisation)."""

    async def work(settings: Settings) -> dict[str, Any]:
        async with _admin(settings, org, user_email=email) as (admin, org_id):
            member = await admin.member_by_email(org_id, email)
            member = await admin.update_user(org_id, member.user.id, UserChanges(role=role.value))
            return member_view(member, org_id)

    _print_users([_run(work)], False)


def _set_disabled(email: str, disabled: bool) -> None:
    async def work(settings: Settings) -> dict[str, Any]:
        async with _admin(settings, None, user_email=email) as (admin, org_id):
            member = await admin.member_by_email(org_id, email)
            member = await admin.update_user(org_id, member.user.id, UserChanges(disabled=disabled))
            return member_view(member, org_id)

    _print_users([_run(work)], False)


@users_app.command("disable")
def users_disable(email: str) -> None:
    """Disable a user: their keys, tokens and sessions stop working (in every organisation)."""
    _set_disabled(email, True)


@users_app.command("enable")
def users_enable(email: str) -> None:
    """Enable a disabled user again (their unrevoked keys work again; sessions need a new login)."""
    _set_disabled(email, False)


# -- keys ------------------------------------------------------------------------------------------------

@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    role: Annotated[RoleOption | None, typer.Option(
        help="Default: the user's role; member for a key without a user.")] = None,
    user: Annotated[str | None, typer.Option(help="Email of the user the key acts as.")] = None,
    division: DivisionOption = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1, max=3650)] = None,
    rpm: Annotated[int | None, typer.Option(min=1, max=1_000_000, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, max=1_000_000_000, help="Tokens per minute.")] = None,
    org: OrgOption = None,
) -> None:
    """Create an API key and print it, once, on stdout (details go to stderr). Default organisation: the
    user's home one with --user, else the first."""
    async def work(settings: Settings) -> dict[str, Any]:
        async with _admin(settings, org, user_email=user) as (admin, org_id):
            user_id = (await admin.member_by_email(org_id, user)).user.id if user is not None else None
            expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
            created = await admin.create_key(org_id, KeySpec(
                name=_checked_name(name), role=role.value if role is not None else None, user_id=user_id,
                division_id=await _division(admin, org_id, division), expires_at=expires_at,
                requests_per_minute=rpm, tokens_per_minute=tpm))
            return created_key_view(created)

    created = _run(work)
    console.print(f"created key {created['id']} ({created['prefix']}…, role {created['role']}); it is shown "
                  "once, below, and stored only as a hash")
    print(created["key"])


@keys_app.command("list")
def keys_list(org: OrgOption = None, as_json: JsonOption = False,
              include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """List an organisation's keys (default: the first): never the keys themselves."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _admin(settings, org) as (admin, org_id):
            keys = await _every_item(
                lambda offset: admin.list_keys(org_id, include_revoked=include_revoked, limit=200, offset=offset))
            return [key_view(key, used) for key, used in keys]

    keys = _run(work)
    if as_json:
        print(json.dumps(keys, indent=2))
        return
    for key in keys:
        state = "revoked" if key["revoked_at"] else f"expires {key['expires_at'][:10]}" if key["expires_at"] else ""
        print(f"{key['id']}  {key['prefix']}…  {key['role']:<7} {key['name']:<30} {state}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, org: OrgOption = None) -> None:
    """Revoke a key (default organisation: the key's own)."""
    async def work(settings: Settings) -> None:
        async with _admin(settings, org, key_id=key_id) as (admin, org_id):
            await admin.revoke_key(org_id, key_id)

    _run(work)
    console.print(f"[green]revoked {key_id}[/green]")


def _checked_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidRequest("name: 1 to 200 characters.")
    return name
