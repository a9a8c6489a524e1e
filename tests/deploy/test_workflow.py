"""The GitHub Actions workflow: valid against the GitHub-workflow JSON schema that check-jsonschema vendors
(offline), and running the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy.tools import ROOT, run, venv_tool

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def check_workflow(path: Path) -> tuple[int, str]:
    result = run(venv_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", path)
    return result.returncode, result.stdout + result.stderr


def test_workflow_matches_the_schema() -> None:
    code, output = check_workflow(WORKFLOW)
    assert code == 0, output


def test_a_broken_workflow_fails_the_schema(tmp_path: Path) -> None:
    for n, (old, new) in enumerate([("runs-on:", "runs_on:"), ("timeout-minutes: 90", "timeout-minutes: ninety"),
                                    ("  pull_request:\n", "  pull_requests:\n")]):
        broken = tmp_path / f"ci{n}.yml"
        text = WORKFLOW.read_text()
        assert old in text
        broken.write_text(text.replace(old, new))
        code, output = check_workflow(broken)
        assert code != 0, (old, output)


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"Run every test.*?```bash\n(.+?)\n```", readme, re.S)
    assert match, "README.md no longer shows its test command"
    return match.group(1).strip()


def test_workflow_runs_the_readme_test_command() -> None:
    assert readme_test_command() == "make test"
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci_run, re.M)
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]["steps"]
    assert steps[-1]["run"] == "bash .ci/run"
    # Python as the project requires it (requires-python), Node for tests/js.
    versions = {step["uses"].split("@")[0]: step.get("with", {}) for step in steps if "uses" in step}
    assert versions["actions/setup-python"]["python-version"] == "3.11"
    assert tuple(int(p) for p in versions["actions/setup-node"]["node-version"].split(".")) >= (20, 19)
