"""argon2id password hashing off the event loop: verify, the dummy check, rehash on weaker parameters."""

from __future__ import annotations

import time

from argon2 import PasswordHasher

from atrium.accounts.passwords import Passwords


async def test_hash_and_verify() -> None:
    passwords = Passwords()
    stored = await passwords.hash("s3cret pass")
    assert stored.startswith("$argon2id$") and "s3cret" not in stored
    assert await passwords.verify(stored, "s3cret pass")
    assert not await passwords.verify(stored, "s3cret pasS")
    assert not await passwords.verify("not a hash", "s3cret pass")
    assert not passwords.needs_rehash(stored)


async def test_a_missing_hash_fails_after_the_same_work() -> None:
    passwords = Passwords()
    stored = await passwords.hash("pw")
    await passwords.verify(None, "warm up")  # makes the dummy hash
    started = time.perf_counter()
    assert not await passwords.verify(None, "pw")
    missing = time.perf_counter() - started
    started = time.perf_counter()
    assert not await passwords.verify(stored, "wrong")
    wrong = time.perf_counter() - started
    assert missing > 0.3 * wrong, (missing, wrong)


async def test_weaker_hashes_need_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
    passwords = Passwords()
    assert await passwords.verify(weak, "pw")
    assert passwords.needs_rehash(weak)
    assert passwords.needs_rehash("garbage")
