"""Settings: defaults, env nesting, YAML config file precedence, validation, masked output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.settings import Settings, masked_dump


def test_defaults_are_the_embedded_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "data"
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atrium.db'}"
    assert settings.chat.provider == "local" and settings.chat.local_model == "qwen2.5-coder-1.5b"
    assert settings.embedding.provider == "onnx"
    assert settings.auth.allow_anonymous is False


def test_env_overrides_config_file_which_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "atrium.yaml"
    config.write_text("chat:\n  provider: openai\n  max_tokens: 100\nknowledge:\n  top_k: 7\n")
    monkeypatch.setenv("ATRIUM_CONFIG", str(config))
    monkeypatch.setenv("ATRIUM_CHAT__MAX_TOKENS", "200")
    settings = Settings()
    assert settings.chat.provider == "openai"
    assert settings.chat.max_tokens == 200
    assert settings.knowledge.top_k == 7


def test_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ValueError, match="config file not found"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [
    ("ATRIUM_BOOTSTRAP_ADMIN_KEY", "short"),
    ("ATRIUM_BOOTSTRAP_ADMIN_KEY", "sk_" + "x" * 40),
    ("ATRIUM_KNOWLEDGE__CHUNK_OVERLAP", "150"),
    ("ATRIUM_CHAT__PROVIDER", "mystery"),
])
def test_invalid_values_are_refused(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_empty_admin_key_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_BOOTSTRAP_ADMIN_KEY", "")
    assert Settings().bootstrap_admin_key is None


def test_masked_dump_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_DATABASE_URL", "postgresql+asyncpg://app:hunter2pass@db.example/atrium")
    monkeypatch.setenv("ATRIUM_REDIS_URL", "redis://:redispass99@cache:6379/0")
    monkeypatch.setenv("ATRIUM_BOOTSTRAP_ADMIN_KEY", "atr_" + "k" * 40)
    monkeypatch.setenv("ATRIUM_CHAT__OPENAI__API_KEY", "sk-live-abcdef123456")
    text = json.dumps(masked_dump(Settings()))
    for secret in ("hunter2pass", "redispass99", "k" * 40, "sk-live-abcdef123456"):
        assert secret not in text
    assert "db.example/atrium" in text


def test_config_show_cli_masks_secrets(tmp_path: Path) -> None:
    env = {"ATRIUM_DATA_DIR": str(tmp_path), "ATRIUM_CHAT__OPENAI__API_KEY": "sk-live-abcdef123456",
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(Path(sys.executable).with_name("atrium")), "config", "show"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["chat"]["openai"]["api_key"] == "**********"
    assert "sk-live" not in result.stdout


def test_unknown_atrium_variables_are_reported() -> None:
    from atrium.settings import unknown_env_vars

    environ = {"ATRIUM_CHAT__PROVIDER": "fake", "ATRIUM_CHAT__OPENAI__API_KEY": "x", "ATRIUM_DATA_DIR": "d",
               "ATRIUM_CHAT__PROVDER": "fake", "ATRIUM_KNOWLEDGE__TOPK": "3", "HOME": "/"}
    assert unknown_env_vars(environ) == ["ATRIUM_CHAT__PROVDER", "ATRIUM_KNOWLEDGE__TOPK"]


def test_cli_warns_about_a_misspelt_variable(tmp_path: Path) -> None:
    env = {"ATRIUM_DATA_DIR": str(tmp_path), "ATRIUM_CHAT__PROVDER": "fake", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(Path(sys.executable).with_name("atrium")), "config", "show"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "ATRIUM_CHAT__PROVDER is not an Atrium setting" in result.stderr
