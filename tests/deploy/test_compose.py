"""docker-compose.yml: `docker-compose config` (Docker Compose v2's own parser and validator) accepts it, the
services the scale profile needs are there with health checks, no secret is written in it, and the environment
it gives Atrium is a valid configuration."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from atrium.settings import unknown_env_vars
from tests.deploy.tools import ROOT, docker_compose, run, settings_from_env

COMPOSE = ROOT / "docker-compose.yml"
# What .env would hold (deploy/compose/env.example): test values only.
ENV = {"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "owner-pw-for-tests",
       "APP_DB_PASSWORD": "app-pw-for-tests"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ADMIN_KEY|DATABASE_URL|API_KEY|TOKEN", re.I)


def compose_config(project: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    result = run(docker_compose(), "--project-directory", project, "-f", project / "docker-compose.yml",
                 "config", "--format", "json", env=env, cwd=project)
    return result.returncode, json.loads(result.stdout) if result.returncode == 0 else {}, result.stderr


def copy_project(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir()
    (tmp_path / "docker-compose.yml").write_text(text)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / "Dockerfile").write_text((ROOT / "Dockerfile").read_text())
    return tmp_path


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    code, data, stderr = compose_config(ROOT, ENV)
    assert code == 0, stderr
    return data


def test_compose_config_passes(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"api", "worker", "migrate", "postgres", "redis"}
    assert config["services"]["postgres"]["image"].startswith("pgvector/pgvector:")
    assert config["services"]["redis"]["image"].startswith("redis:")
    assert config["services"]["worker"]["command"][0] == "worker"
    assert config["services"]["api"]["command"] == ["serve"]


def test_services_wait_for_healthy_dependencies(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("api", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    # The API and the workers share one data directory (uploads wait there for their job).
    mounts = {name: [v["source"] for v in services[name]["volumes"]] for name in ("api", "worker")}
    assert mounts["api"] == mounts["worker"] == ["atrium-data"]


def inlined_secrets(text: str) -> list[str]:
    """Lines giving a secret-looking variable a value that is not interpolated from the environment (.env)."""
    found = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and SECRET_NAME.search(key) and value.strip() and "${" not in value:
            found.append(line.strip())
    return found


def test_no_secret_is_written_in_the_file() -> None:
    assert inlined_secrets(COMPOSE.read_text()) == []


def test_a_written_secret_is_caught() -> None:
    text = COMPOSE.read_text().replace("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}",
                                       "POSTGRES_PASSWORD: hunter2")
    assert inlined_secrets(text) == ["POSTGRES_PASSWORD: hunter2"]


def test_a_missing_secret_stops_compose_config(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "POSTGRES_PASSWORD"}
    code, _, stderr = compose_config(ROOT, env)
    assert code != 0
    assert "POSTGRES_PASSWORD" in stderr


def test_compose_config_fails_a_broken_copy(tmp_path: Path) -> None:
    broken = COMPOSE.read_text().replace("condition: service_completed_successfully",
                                         "condition: service_finished", 1)
    code, _, stderr = compose_config(copy_project(tmp_path / "a", broken), ENV)
    assert code != 0 and "services.api.depends_on.migrate.condition" in stderr
    unknown_service = COMPOSE.read_text().replace("      redis:\n        condition: service_healthy\n",
                                                  "      rediss:\n        condition: service_healthy\n", 1)
    code, _, stderr = compose_config(copy_project(tmp_path / "b", unknown_service), ENV)
    assert code != 0 and "rediss" in stderr


def atrium_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in service["environment"].items() if k.startswith("ATRIUM_")}


def test_the_environment_is_a_valid_atrium_configuration(config: dict[str, Any]) -> None:
    for name in ("api", "worker", "migrate"):
        env = atrium_env(config["services"][name])
        assert unknown_env_vars(env) == [], name
        settings = settings_from_env(env)
        assert not settings.is_sqlite
        assert settings.redis_url is not None
        assert settings.database.require_rls is True
        assert settings.bootstrap_admin_key is None and settings.auth.jwt_secret is None  # empty means unset
        # The application role differs from the migration (owner) role, so RLS applies to the application.
        app_user = settings.resolved_database_url.split("//")[1].split(":")[0]
        owner_user = settings.resolved_migration_database_url.split("//")[1].split(":")[0]
        assert (app_user, owner_user) == ("atrium_app", "atrium")


def test_a_misnamed_variable_is_caught(config: dict[str, Any]) -> None:
    env = atrium_env(config["services"]["api"])
    env["ATRIUM_REDIS_ULR"] = env.pop("ATRIUM_REDIS_URL")
    assert unknown_env_vars(env) == ["ATRIUM_REDIS_ULR"]
    env = atrium_env(config["services"]["api"]) | {"ATRIUM_DATABASE__REQUIRE_RLS": "sometimes"}
    with pytest.raises(ValueError, match="require_rls"):
        settings_from_env(env)
