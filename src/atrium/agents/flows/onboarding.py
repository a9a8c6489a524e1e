"""The ``onboarding`` flow: an admin makes a new member's account, guided.

email (valid, not registered) -> interests (several of a fixed list) -> username (three suggested by the
model from the email and the interests, each checked free; the admin picks one or types another, checked
too) -> password (the password policy; hashed the moment it is answered: only the hash enters the flow)
-> confirmation -> the account is created (``atrium.accounts.onboarding.create_member``).

Who may run it: admins (``min_role``), for their own organisation; see ``atrium.accounts.onboarding``.
Its checkpoints are erased when it ends (``erase_on_finish``): they held the password's hash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from atrium.accounts.onboarding import (
    USERNAME_PATTERN,
    USERNAME_RULE,
    create_member,
    email_registered,
    username_taken,
)
from atrium.accounts.service import Accounts
from atrium.agents.flows.definition import (
    ActionStep,
    Choice,
    ConfirmStep,
    FieldStep,
    FlowDefinition,
    FlowEnv,
    SuggestionStep,
)
from atrium.agents.flows.suggest import suggestions

INTERESTS = ("ai", "data", "design", "engineering", "marketing", "product", "research", "sales", "support",
             "writing")
_NOT_HANDLE = re.compile(r"[^a-z0-9_.-]+")


def _accounts(env: FlowEnv) -> Accounts:
    accounts = env.deps.extra.get("accounts")
    if not isinstance(accounts, Accounts):
        raise RuntimeError("the onboarding flow needs the accounts service (AgentDeps.extra['accounts'])")
    return accounts


async def _email_free(value: Any, env: FlowEnv) -> str | None:
    if await email_registered(_accounts(env), str(value)):
        return "This email is already registered."
    return None


async def _username_free(value: Any, env: FlowEnv) -> str | None:
    if await username_taken(_accounts(env), str(value)):
        return "This username is taken; choose another."
    return None


def handle(raw: str) -> str | None:
    """``raw`` as a username (lowercased, without a leading ``@``) if it is a valid one, else None: a
    sentence of the model is not turned into a username."""
    value = raw.strip().lower().lstrip("@")
    return value if re.fullmatch(USERNAME_PATTERN, value) else None


def fallback_usernames(email: str, interests: list[str]) -> list[str]:
    """Deterministic candidates: the email's local part in a few shapes, with an interest, then numbered."""
    local = email.split("@", 1)[0].lower()
    base = handle(_NOT_HANDLE.sub("", local).strip("._-")[:24]) or "member"
    plain = base.replace(".", "").replace("_", "").replace("-", "") or base
    found = [base, plain, base.replace(".", "_")]
    found += [f"{plain}.{interest}" for interest in interests[:2]]
    found += [f"{plain}{n}" for n in range(1, 10)]
    return found


async def _suggest_usernames(env: FlowEnv) -> list[str]:
    email = str(env.values.get("email", ""))
    interests = [str(i) for i in env.values.get("interests") or []]
    instruction = (f"Suggest 3 short usernames for a new member whose email is {email!r} and whose interests are "
                   f"{', '.join(interests) or 'unknown'}. Usernames: {USERNAME_RULE}")
    accounts = _accounts(env)

    async def free(value: str) -> bool:
        return not await username_taken(accounts, value)

    return await suggestions(env, instruction, count=3, normalise=handle,
                             fallback=fallback_usernames(email, interests), accept=free)


def _summary(values: Mapping[str, Any]) -> str:
    interests = ", ".join(values.get("interests") or []) or "none"
    return (f"Create the account of {values.get('email')} as {values.get('username')} (role member), "
            f"interests: {interests}.")


async def _create(env: FlowEnv) -> dict[str, Any]:
    values = env.values
    member = await create_member(_accounts(env), env.principal, email=str(values["email"]),
                                 username=str(values["username"]), password_hash=str(values["password"]),
                                 interests=list(values.get("interests") or []))
    return {"user_id": member.user.id, "email": member.user.email, "username": member.user.username,
            "role": member.membership.role, "interests": member.user.interests or []}


def onboarding_flow() -> FlowDefinition:
    return FlowDefinition(
        name="onboarding", title="Onboard a new member",
        description="An admin creates a new member's account: email, interests, username, password.",
        min_role="admin", erase_on_finish=True, secret_steps=("password",),
        steps=(
            FieldStep("email", "email", "What is the new member's email address?", max_length=320,
                      check=_email_free),
            FieldStep("interests", "multi_choice", "What are they interested in? Choose one or more.",
                      choices=tuple(Choice(value) for value in INTERESTS), min_choices=1, max_choices=5),
            SuggestionStep("username", "text", "Choose a username: one of the suggestions, or your own.",
                           min_length=3, max_length=30, pattern=USERNAME_PATTERN,
                           pattern_error=f"A username has {USERNAME_RULE}", check=_username_free,
                           suggest=_suggest_usernames),
            FieldStep("password", "password", "Choose their initial password (at least 8 characters).",
                      min_length=8, max_length=1024),
            ConfirmStep("confirm", "Create this account?", summary=_summary),
            ActionStep("create_account", _create),
        ))
