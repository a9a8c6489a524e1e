"""Secrets never reach a log sink: records of any logger (pytest's caplog included) are redacted when
created, tracebacks too, and the settings' own secrets are masked by value whatever their shape."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from atrium.settings import GatewaySettings, ProviderSettings, Settings
from atrium.telemetry.logging import (
    install_record_redaction,
    redact,
    redact_secrets,
    register_secrets,
    secrets_of,
)


@pytest.mark.parametrize("secret", [
    "atr_abcdefghijklmnopqrstuvwxyz012345",
    "sk-ant-api03-abcdefghijklmnop",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
])
def test_credential_shapes_are_masked(secret: str) -> None:
    assert secret not in redact(f"failed with {secret}!")


@pytest.mark.parametrize(("text", "secret"), [
    ('{"email": "a@b.c", "password": "correct horse battery"}', "correct horse battery"),
    ("GET /cb?code=1&access_token=abc123xyz HTTP/1.1", "abc123xyz"),
    ("postgresql+asyncpg://app:Pg-pa55word@db:5432/atrium", "Pg-pa55word"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", "MIIEvQIBADANBg"),
])
def test_secrets_after_a_marker_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_settings_secrets_are_found_and_masked_by_value() -> None:
    settings = Settings(database_url=SecretStr("postgresql://u:plain-pass-word-42@h/db"),
                        gateway=GatewaySettings(providers={"x": ProviderSettings(kind="openai",
                                                                                 api_key=SecretStr("zz-9-odd-shape"))}))
    found = secrets_of(settings)
    assert "plain-pass-word-42" in found and "zz-9-odd-shape" in found
    register_secrets(found)
    assert redact("upstream said zz-9-odd-shape is wrong; pw plain-pass-word-42") == (
        "upstream said [REDACTED] is wrong; pw [REDACTED]")


def test_records_of_every_logger_are_redacted_for_every_handler(caplog: pytest.LogCaptureFixture) -> None:
    install_record_redaction()
    register_secrets(["odd-known-value-77"])
    caplog.set_level(logging.DEBUG)
    key = "sk-live-abcdefghijklmnopqrstu"
    logging.getLogger("httpx").debug("HTTP Request: POST %s", f"https://api.example/v1?key={key}")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "1.2.3.4", "GET", "/x?token=abc", "1.1", 200)
    try:
        raise RuntimeError(f"boom with odd-known-value-77 and {key}")
    except RuntimeError:
        logging.getLogger("sqlalchemy.engine").exception("crashed: %s", RuntimeError("odd-known-value-77"))
    text = caplog.text + "".join(str(r.args) + r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert key not in text and "odd-known-value-77" not in text and "token=abc" not in text
    assert "RuntimeError" in text and "200" in caplog.text  # formatting still works (%d kept an int)


def test_structlog_events_are_redacted_through_nested_values() -> None:
    event = redact_secrets(None, "info", {"event": "login", "body": {"password": "hunter22", "tokens": 3,
                                                                     "note": "Bearer abcdefghijk"}})
    assert "abcdefghijk" not in str(event) and "hunter22" not in str(event)
    assert event["event"] == "login" and event["body"]["tokens"] == 3
