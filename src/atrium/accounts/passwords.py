"""Password hashing with argon2id (argon2-cffi), always off the event loop.

A hash takes ~100 ms of CPU and 64 MiB of memory by design, so it runs in a worker thread, and a small
capacity limiter bounds how many run at once (a burst of logins must not eat the machine's memory).
``verify`` against a missing hash still does the work of a real verification (against a dummy hash), so
an unknown email and a wrong password take about as long.
"""

from __future__ import annotations

import secrets

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 8


def password_problem(password: str) -> str | None:
    """What makes ``password`` unacceptable under the password policy (the one the account routes and
    the CLI apply: 8 to 1,024 characters), or None."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        return f"A password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
    if not password.strip():
        return "A password cannot be only spaces."
    return None


class Passwords:
    """Hash, verify and upgrade passwords. Build one per process (inside the event loop)."""

    def __init__(self, hasher: PasswordHasher | None = None, *, max_concurrent: int = 4) -> None:
        self._hasher = hasher or PasswordHasher()
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches ``password_hash``. With no hash (unknown user, service account)
        the answer is False, after the same amount of work."""
        if password_hash is None:
            await anyio.to_thread.run_sync(self._verify, await self._dummy(), password, limiter=self._limiter)
            return False
        return await anyio.to_thread.run_sync(self._verify, password_hash, password, limiter=self._limiter)

    def needs_rehash(self, password_hash: str) -> bool:
        """True if the hash was made with weaker parameters than the current ones (rehash it on login)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError, ValueError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        return self._dummy_hash
