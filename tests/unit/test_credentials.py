"""One set of credential shapes (telemetry/credentials.py) behind its three users: log redaction, the PII
guard's ``secret`` type and the scrubbing of upstream error text. Each shape below was known to only one of
them before they shared it; each user must now catch it."""

from __future__ import annotations

import pytest

from atrium.gateway.providers.base import Provider
from atrium.guard.pii import detect
from atrium.telemetry.logging import redact

GROQ_KEY = "gsk_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
STRIPE_KEY = "sk_live_" + "Zx9Yw8Vu7Ts6"
GITHUB_TOKEN = "ghp_" + "0123456789abcdefghijABCDEFGHIJ"
PROVIDER = Provider(name="p", base_url="https://api.example.test/v1", model="m")


@pytest.mark.parametrize("secret", [GROQ_KEY, STRIPE_KEY])
def test_logs_and_the_pii_guard_catch_keys_the_error_scrubber_knew(secret: str) -> None:
    text = f"the upstream said: invalid key {secret}, try again"
    assert secret not in redact(text)
    assert [text[f.start:f.end] for f in detect(text, ["secret"])] == [secret]


def test_the_error_scrubber_catches_vendor_shapes_the_logs_knew() -> None:
    scrubbed = PROVIDER.redact(f"token {GITHUB_TOKEN} is not allowed here; keep application/json")
    assert GITHUB_TOKEN not in scrubbed and "application/json" in scrubbed


def test_logs_mask_a_secret_named_by_a_word_the_guard_knew() -> None:
    assert redact('{"passkey": "hunter2 hunter2"}') == '{"passkey": "[REDACTED]"}'
    assert redact("key: s3cr3t-value") == "key: [REDACTED]"
