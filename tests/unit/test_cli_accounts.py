"""``atrium users ...`` and ``atrium keys ...`` through typer's CliRunner, on a temporary data dir: what a
shell user sees, what lands in the database and the audit trail, and a revocation that reaches a running
server through Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from typer.testing import CliRunner, Result

from atrium.accounts.api_keys import hash_key
from atrium.cli import app
from tests.conftest import make_settings, run_app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in [name for name in os.environ if name.startswith("ATRIUM_")]:
        monkeypatch.delenv(name)
    folder = tmp_path / "data"
    for name, value in {"ATRIUM_DATA_DIR": str(folder), "ATRIUM_EMBEDDING__PROVIDER": "hash",
                        "ATRIUM_CHAT__PROVIDER": "fake", "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false"}.items():
        monkeypatch.setenv(name, value)
    yield folder


def atrium(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=stdin)


def rows(folder: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    with sqlite3.connect(folder / "atrium.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute(sql, params))


def test_users_and_keys_from_the_shell(data_dir: Path) -> None:
    password = "a correct horse battery"
    created = atrium("users", "create", "--email", "Ops@Example.org", "--name", "Ops", "--role", "admin",
                     "--password-stdin", stdin=password + "\n")
    assert created.exit_code == 0, created.output
    assert "admin API key (shown once)" in created.stderr  # a new data dir: the first start happened here
    assert "ops@example.org" in created.stdout and "admin" in created.stdout

    listed = atrium("users", "list", "--json")
    assert listed.exit_code == 0, listed.output
    users = {user["email"]: user for user in json.loads(listed.stdout)}
    assert set(users) == {"admin@localhost", "ops@example.org"}
    assert users["ops@example.org"]["has_password"] is True and password not in listed.stdout

    made = atrium("keys", "create", "--name", "deploys", "--user", "ops@example.org", "--expires-in-days", "30",
                  "--rpm", "60", "--tpm", "6000")
    assert made.exit_code == 0, made.output
    raw = made.stdout.strip()
    assert raw.startswith("atr_") and len(made.stdout.splitlines()) == 1  # only the key on stdout
    assert raw not in made.stderr and "shown" in made.stderr
    [key] = rows(data_dir, "SELECT * FROM api_keys WHERE key_hash = ?", hash_key(raw))
    assert (key["role"], key["requests_per_minute"], key["tokens_per_minute"]) == ("admin", 60, 6000)
    assert key["user_id"] == users["ops@example.org"]["id"] and key["expires_at"] is not None

    keys = atrium("keys", "list", "--json")
    assert keys.exit_code == 0, keys.output
    assert raw not in keys.stdout and hash_key(raw) not in keys.stdout
    assert key["id"] in {k["id"] for k in json.loads(keys.stdout)}

    demoted = atrium("users", "set-role", "ops@example.org", "viewer")
    assert demoted.exit_code == 0 and "viewer" in demoted.stdout
    [lowered] = rows(data_dir, "SELECT role FROM api_keys WHERE id = ?", key["id"])
    assert lowered["role"] == "viewer"  # the key followed its user down

    revoked = atrium("keys", "revoke", key["id"])
    assert revoked.exit_code == 0, revoked.output
    [after] = rows(data_dir, "SELECT revoked_at FROM api_keys WHERE id = ?", key["id"])
    assert after["revoked_at"] is not None
    assert key["id"] not in atrium("keys", "list").stdout and key["id"] in atrium("keys", "list", "--all").stdout

    disabled = atrium("users", "disable", "ops@example.org")
    assert disabled.exit_code == 0 and "disabled" in disabled.stdout

    audit = rows(data_dir, "SELECT * FROM audit_log ORDER BY id")
    assert [row["action"] for row in audit] == ["user.create", "key.create", "role.change", "key.revoke",
                                                "user.disable"]
    for row in audit:
        assert json.loads(row["details"])["via"] == "cli"
        assert row["actor_user_id"] is None and row["actor_key_id"] is None
        text = " ".join(str(value) for value in tuple(row))
        assert raw not in text and raw[4:] not in text and password not in text


def test_mistakes_get_a_clear_message_and_no_traceback(data_dir: Path) -> None:
    for args, stdin, code, message in (
        (("users", "set-role", "nobody@example.org", "admin"), None, 1, "No user with the email"),
        (("users", "disable", "admin@localhost"), None, 1, "at least one active owner"),
        (("users", "create", "--email", "a@example.org", "--name", "A", "--password-stdin",
          "--password-prompt"), None, 2, "not both"),
        (("users", "create", "--email", "a@example.org", "--name", "A", "--password-stdin"), "short\n", 2,
         "8 to"),
        (("users", "create", "--email", "a@example.org", "--name", "A", "--role", "emperor"), None, 2, "emperor"),
        (("keys", "create", "--name", "k", "--division", "Nowhere"), None, 1, "No division"),
        (("keys", "revoke", "0" * 32), None, 1, "No API key"),
        (("users", "list", "--org", "f" * 32), None, 1, "no organisation"),
    ):
        result = atrium(*args, stdin=stdin)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped error
    assert [user["email"] for user in json.loads(atrium("users", "list", "--json").stdout)] == ["admin@localhost"]


def test_a_division_by_name_and_a_key_without_a_user(data_dir: Path) -> None:
    assert atrium("users", "list").exit_code == 0  # first start
    [org] = rows(data_dir, "SELECT id FROM organizations")
    with sqlite3.connect(data_dir / "atrium.db") as db:
        db.execute("INSERT INTO divisions (id, org_id, name, created_at) VALUES (?, ?, 'North', "
                   "'2026-01-01 00:00:00')", ("d" * 32, org["id"]))
    made = atrium("keys", "create", "--name", "north robot", "--division", "North", "--role", "viewer")
    assert made.exit_code == 0, made.output
    [key] = rows(data_dir, "SELECT * FROM api_keys WHERE key_hash = ?", hash_key(made.stdout.strip()))
    assert (key["division_id"], key["user_id"], key["role"]) == ("d" * 32, None, "viewer")
    default = atrium("keys", "create", "--name", "plain")
    [plain] = rows(data_dir, "SELECT role FROM api_keys WHERE key_hash = ?", hash_key(default.stdout.strip()))
    assert plain["role"] == "member"  # a key without a user defaults to member, even when an owner makes it


@pytest.mark.integration
async def test_a_cli_revocation_reaches_a_running_server_through_redis(data_dir: Path, redis_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A long key cache: only the announcement can make the server refuse the key within the test.
    monkeypatch.setenv("ATRIUM_REDIS_URL", redis_url)
    monkeypatch.setenv("ATRIUM_AUTH__KEY_CACHE_TTL_S", "300")
    settings = await anyio.to_thread.run_sync(
        lambda: make_settings(data_dir, redis_url=redis_url, auth={"key_cache_ttl_s": 300}))
    async with run_app(settings) as server:
        made = await anyio.to_thread.run_sync(lambda: atrium("keys", "create", "--name", "remote"))
        assert made.exit_code == 0, made.output
        raw = made.stdout.strip()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {raw}"}) as client:
            assert (await client.get("/api/v1/conversations")).status_code == 200  # now cached for 300 s
            [key] = await anyio.to_thread.run_sync(
                lambda: rows(data_dir, "SELECT id FROM api_keys WHERE key_hash = ?", hash_key(raw)))
            revoked = await anyio.to_thread.run_sync(lambda: atrium("keys", "revoke", key["id"]))
            assert revoked.exit_code == 0, revoked.output
            for _ in range(100):
                if (await client.get("/api/v1/conversations")).status_code == 401:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the server still accepts the key revoked from the CLI")
