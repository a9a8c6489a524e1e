"""The Dockerfile: hadolint-clean, non-root, its build context complete, and its model-baking step working
against today's code. Docker itself is not run here (no daemon in CI): these checks stand in for a build."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT, run, venv_tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def runtime_user_problems(text: str) -> list[str]:
    users = [rest for keyword, rest in final_stage(text) if keyword == "USER"]
    if not users:
        return ["the final stage sets no USER: the container would run as root"]
    user = users[-1].split(":")[0]
    if user in ("root", "0"):
        return [f"the final stage runs as {users[-1]!r}"]
    return []


def dockerignore_problems(dockerfile: str, dockerignore: str) -> list[str]:
    """Every path the Dockerfile COPYs from the context must be re-included after the `*` of .dockerignore."""
    included = {line[1:].rstrip("/") for line in dockerignore.splitlines() if line.startswith("!")}
    problems = []
    for keyword, rest in instructions(dockerfile):
        if keyword != "COPY" or "--from=" in rest:
            continue
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        problems += [f"COPY {source}: excluded by .dockerignore" for source in sources
                     if source.rstrip("/") not in included]
    return problems


def test_hadolint_passes() -> None:
    result = run(venv_tool("hadolint"), "--config", ROOT / ".hadolint.yaml", "--no-color", DOCKERFILE, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text() + "USER root\nRUN apt-get install curl\n")
    result = run(venv_tool("hadolint"), "--config", ROOT / ".hadolint.yaml", "--no-color", broken, cwd=tmp_path)
    assert result.returncode != 0
    for rule in ("DL3002", "DL3008", "DL3014", "DL3015"):  # last user root, unpinned, no -y, recommends
        assert rule in result.stdout


def test_runs_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert runtime_user_problems(text) == []
    assert ("ENTRYPOINT", '["atrium"]') in final_stage(text)


def test_a_copy_without_user_is_refused() -> None:
    text = "".join(line for line in DOCKERFILE.read_text().splitlines(keepends=True) if not line.startswith("USER"))
    assert runtime_user_problems(text) == ["the final stage sets no USER: the container would run as root"]
    assert runtime_user_problems(DOCKERFILE.read_text() + "USER 0\n") != []


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    dockerignore = (ROOT / ".dockerignore").read_text()
    assert dockerignore_problems(DOCKERFILE.read_text(), dockerignore) == []
    # Local state never enters the image.
    assert "*" in dockerignore.splitlines()


def test_a_context_missing_a_copied_path_is_refused() -> None:
    dockerignore = (ROOT / ".dockerignore").read_text().replace("!docs/\n", "")
    assert dockerignore_problems(DOCKERFILE.read_text(), dockerignore) == ["COPY docs: excluded by .dockerignore"]


def bake_snippet(text: str) -> str:
    match = re.search(r'python -c "(.*?)" \\\n', text, re.S)
    assert match, "the model-baking step is gone from the Dockerfile"
    return match.group(1).replace("\\\n", "")


@pytest.mark.integration
def test_the_model_baking_step_assembles_a_verified_model(tmp_path: Path) -> None:
    """The Dockerfile's own Python snippet, run against the small bundled model (installed by the dev group):
    it joins and verifies the model and names the chunk packages the next step uninstalls."""
    from atrium.gateway.local_models import get_local_model

    snippet = bake_snippet(DOCKERFILE.read_text()).replace("/opt/atrium", str(tmp_path))
    (tmp_path / "models").mkdir()
    result = subprocess.run([sys.executable, "-c", snippet, "qwen2.5-coder-0.5b"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    spec = get_local_model("qwen2.5-coder-0.5b")
    model = tmp_path / "models" / spec.file_name
    assert Path(result.stdout.strip()) == model
    assert model.stat().st_size == spec.size
    assert (tmp_path / "models" / f"{spec.file_name}.sha256").exists()
    assert list((tmp_path / "models").glob(".*.lock")), "the step's `rm .../.*.lock` would fail"
    packages = (tmp_path / "chunk-packages.txt").read_text().split()
    assert len(packages) == spec.parts
    for name in packages:  # each is an installed distribution, so `uv pip uninstall` finds it
        importlib.metadata.version(name)
    shutil.rmtree(tmp_path / "models")


def test_the_model_baking_step_refuses_an_unknown_model(tmp_path: Path) -> None:
    snippet = bake_snippet(DOCKERFILE.read_text()).replace("/opt/atrium", str(tmp_path))
    (tmp_path / "models").mkdir()
    result = subprocess.run([sys.executable, "-c", snippet, "no-such-model"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "Unknown local model" in result.stderr
