"""No log level shows SQL parameters or credentials: every credential shape Atrium hands out or accepts is
masked (API keys, refresh tokens, JWTs, bearer headers, passwords in URLs), the database loggers are capped
at WARNING whatever the application's level, and a record they still emit (a logger opened by hand, an
engine with ``echo``) carries no parameter or row."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.accounts.api_keys import generate_key
from atrium.accounts.refresh import TOKEN_PREFIX
from atrium.store.engine import build_engine
from atrium.telemetry.logging import DATA_LOGGERS, install_record_redaction, redact

REFRESH_TOKEN = TOKEN_PREFIX + secrets.token_urlsafe(32)
API_KEY = generate_key()
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3ItMSIsIm9yZyI6Im9yZy0xIn0."
       "dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk")
PARAMETER = "argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0LWhhc2g"  # shaped like nothing the patterns know


@pytest.mark.parametrize(("text_", "secret"), [
    (f"refresh with {REFRESH_TOKEN} failed", REFRESH_TOKEN),
    (f'{{"refresh": "{REFRESH_TOKEN}"}}', REFRESH_TOKEN),
    (f"GET /api/v1/auth/refresh/{REFRESH_TOKEN} HTTP/1.1", REFRESH_TOKEN),
    (f"key={API_KEY}", API_KEY),
    (f"used {API_KEY}.", API_KEY),
    (f"token {JWT} expired", JWT),
    ("Authorization: Bearer opaque.credential-0123456789", "opaque.credential-0123456789"),
    ("authorization: bearer opaque.credential-0123456789", "opaque.credential-0123456789"),
    ("postgresql+asyncpg://app:Pg%40ss-w0rd@db:5432/atrium", "Pg%40ss-w0rd"),
    ("redis://:Redis-Pass-0451@cache:6379/0", "Redis-Pass-0451"),
    ("unix://hyg:Redis-Pass-0452@/run/redis.sock?db=7", "Redis-Pass-0452"),
    ("https://user:Http-Pass-0453@example.com/path", "Http-Pass-0453"),
    ("redis://cache:6379/0?password=Redis-Pass-0454", "Redis-Pass-0454"),
])
def test_every_credential_shape_is_masked(text_: str, secret: str) -> None:
    assert secret not in redact(text_)


def test_sqlalchemy_error_parameters_are_masked() -> None:
    message = ("(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n"
               "[SQL: INSERT INTO users (email, password_hash) VALUES (?, ?)]\n"
               f"[parameters: ('a@b.c', '{PARAMETER}', '[odd]')]\n"
               "(Background on this error at: https://sqlalche.me/e/20/gkpj)")
    shown = redact(message)
    assert PARAMETER not in shown and "UNIQUE constraint failed" in shown and "(Background" in shown


def test_database_loggers_are_capped_whatever_the_root_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger, restored after the test
    for name in DATA_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    install_record_redaction()
    for name in (*DATA_LOGGERS, "sqlalchemy.engine.Engine"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name


async def test_records_of_database_loggers_opened_by_hand_carry_no_parameter_or_row(
        caplog: pytest.LogCaptureFixture) -> None:
    install_record_redaction()
    caplog.set_level(logging.DEBUG)
    for name in DATA_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    # echo="debug": SQLAlchemy logs statements, parameters and result rows (aiosqlite every call's arguments)
    engine = create_async_engine("sqlite+aiosqlite://", echo="debug")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (secret TEXT UNIQUE)"))
            await connection.execute(text("INSERT INTO t VALUES (:value)"), {"value": PARAMETER})
            assert await connection.scalar(text("SELECT secret FROM t")) == PARAMETER
    finally:
        await engine.dispose()
    shown = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert {"aiosqlite", "sqlalchemy.engine.Engine"} <= {record.name for record in caplog.records}
    assert "INSERT INTO t VALUES" in shown  # statements are still there, parameters and rows are not
    assert PARAMETER not in shown


async def test_database_errors_do_not_quote_parameters(caplog: pytest.LogCaptureFixture) -> None:
    install_record_redaction()
    engine = build_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (secret TEXT UNIQUE)"))
            await connection.execute(text("INSERT INTO t VALUES (:value)"), {"value": PARAMETER})
            with pytest.raises(IntegrityError) as failure:
                await connection.execute(text("INSERT INTO t VALUES (:value)"), {"value": PARAMETER})
    finally:
        await engine.dispose()
    assert PARAMETER not in str(failure.value)
    try:
        raise failure.value
    except IntegrityError:
        logging.getLogger("atrium.test").exception("insert failed: %s", failure.value)
    assert "UNIQUE constraint failed" in caplog.text and PARAMETER not in caplog.text


def test_cli_logging_at_debug_shows_no_sql_parameter() -> None:
    """``atrium serve``'s logging set-up (``configure_logging``) at DEBUG, in a process of its own."""
    script = textwrap.dedent(f"""
        import asyncio, logging
        from sqlalchemy import text
        from atrium.store.engine import build_engine
        from atrium.telemetry.logging import configure_logging

        configure_logging("debug")

        async def main():
            engine = build_engine("sqlite+aiosqlite://")
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE t (secret TEXT)"))
                await connection.execute(text("INSERT INTO t VALUES (:value)"), {{"value": {PARAMETER!r}}})
                await connection.scalar(text("SELECT secret FROM t"))
            await engine.dispose()
            logging.getLogger("atrium.test").debug("refresh token %s", {REFRESH_TOKEN!r})

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "refresh token [REDACTED]" in done.stderr  # DEBUG lines are written
    assert PARAMETER not in done.stderr + done.stdout and REFRESH_TOKEN not in done.stderr
