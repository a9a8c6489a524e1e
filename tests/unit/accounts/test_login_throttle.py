"""Login throttling: failures per email, attempts per IP, and an unreachable Redis does not stop logins."""

from __future__ import annotations

from pathlib import Path

import pytest

from atrium.accounts.login import LoginThrottle
from atrium.errors import RateLimited
from atrium.guard.rate_limits import build_storage
from atrium.settings import AuthSettings


async def test_failures_per_email_and_attempts_per_ip() -> None:
    throttle = LoginThrottle(AuthSettings(login_failures_per_minute_per_email=2, login_attempts_per_minute_per_ip=5),
                             build_storage(None))
    for _ in range(2):
        await throttle.admit("a@x.io", "10.0.0.1")
        await throttle.failed("a@x.io")
    with pytest.raises(RateLimited) as caught:
        await throttle.admit("a@x.io", "10.0.0.2")
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    for _ in range(3):
        await throttle.admit("b@x.io", "10.0.0.1")  # successes are not counted per email...
    with pytest.raises(RateLimited):  # ...but every attempt counts per IP (5 so far, plus this one)
        await throttle.admit("c@x.io", "10.0.0.1")
    await throttle.admit("c@x.io", "10.0.0.3")


async def test_an_unreachable_storage_lets_logins_through(tmp_path: Path) -> None:
    storage = build_storage(f"unix://{tmp_path / 'no-redis.sock'}", timeout_s=0.2)
    throttle = LoginThrottle(AuthSettings(login_failures_per_minute_per_email=1), storage)
    for _ in range(3):
        await throttle.admit("a@x.io", "10.0.0.1")
        await throttle.failed("a@x.io")
