"""Settings: defaults, env nesting, YAML config file precedence, validation, masked output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.settings import DeprecatedSettingWarning, Settings, masked_dump


def test_defaults_are_the_embedded_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "data"
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atrium.db'}"
    assert settings.chat.local_model == "qwen2.5-coder-1.5b"
    assert list(settings.gateway.models) == ["qwen2.5-coder-1.5b"]
    assert settings.gateway.providers["local"].kind == "local"
    assert settings.embedding.provider == "onnx"
    assert settings.auth.allow_anonymous is False


def test_env_overrides_config_file_which_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "atrium.yaml"
    config.write_text("chat:\n  provider: openai\n  max_tokens: 100\nknowledge:\n  top_k: 7\n")
    monkeypatch.setenv("ATRIUM_CONFIG", str(config))
    monkeypatch.setenv("ATRIUM_CHAT__MAX_TOKENS", "200")
    with pytest.warns(DeprecatedSettingWarning):
        settings = Settings()
    assert settings.gateway.providers["openai"].kind == "openai"
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
    env = {"ATRIUM_DATA_DIR": str(tmp_path), "ATRIUM_CHAT__PROVIDER": "openai",
           "ATRIUM_CHAT__OPENAI__API_KEY": "sk-live-abcdef123456", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}  # a worktree's own code, when run from one
    result = subprocess.run([str(Path(sys.executable).with_name("atrium")), "config", "show"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["gateway"]["providers"]["openai"]["api_key"] == "**********"
    assert "sk-live" not in result.stdout + result.stderr
    assert "migrated to gateway.providers.openai and gateway.models.gpt-4o-mini" in result.stderr


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


def test_a_legacy_chat_provider_is_migrated_to_the_gateway_with_a_warning() -> None:
    with pytest.warns(DeprecatedSettingWarning, match=r"gateway\.providers\.openai and gateway\.models") as seen:
        settings = Settings(chat={"provider": "openai", "max_tokens": 50,
                                  "openai": {"api_key": "sk-live-abcdef123456", "base_url": "http://up/v1"}})
    assert "sk-live" not in " ".join(str(w.message) for w in seen)
    provider = settings.gateway.providers["openai"]
    assert provider.kind == "openai" and provider.base_url == "http://up/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-live-abcdef123456"
    assert settings.gateway.models["gpt-4o-mini"].provider == "openai"
    assert settings.chat.max_tokens == 50  # what is not about choosing a model stays in chat.*
    with pytest.warns(DeprecatedSettingWarning, match=r"gateway\.models\.fake"):
        fake = Settings(chat={"provider": "fake", "fake_token_delay_s": 0.5})
    assert fake.gateway.providers["fake"].fake_token_delay_s == 0.5 and list(fake.gateway.models) == ["fake"]


def test_a_legacy_chat_provider_beside_gateway_models_is_ignored_with_a_warning() -> None:
    gateway = {"providers": {"up": {"kind": "fake"}}, "models": {"mine": {"provider": "up", "model": "m"}}}
    with pytest.warns(DeprecatedSettingWarning, match=r"chat\.provider ignored"):
        settings = Settings(chat={"provider": "openai"}, gateway=gateway)
    assert list(settings.gateway.models) == ["mine"] and "openai" not in settings.gateway.providers


@pytest.mark.parametrize("chat", [{"provider": "mystery"}, {"provider": "openai", "openai": {"key": "sk-x"}},
                                  {"provider": "openai", "openai": {"api_key": 12345678}}])
def test_a_legacy_chat_config_that_cannot_be_migrated_is_refused_naming_the_new_keys(chat: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=r"gateway\.providers and gateway\.models") as refused:
        Settings(chat=chat, database_url="postgresql+asyncpg://app:hunter2pass@db/atrium")
    assert "hunter2pass" not in str(refused.value) and "sk-x" not in str(refused.value)
    assert "12345678" not in str(refused.value)


def test_an_injected_chat_model_stands_in_for_the_implied_one_only() -> None:
    implied = Settings().gateway
    assert implied.without_implied_models().models == {}
    gateway = {"providers": {"up": {"kind": "fake"}}, "models": {"mine": {"provider": "up", "model": "m"}}}
    configured = Settings(gateway=gateway).gateway
    assert configured.without_implied_models() is configured
