"""The configuration reference in docs/operations.md is generated from the settings classes and kept equal
to them; the generator reads names, variables, types, bounds, defaults and the comments beside fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from atrium.config_doc import BEGIN, END, render, replace_generated, sections
from atrium.settings import Settings, _env_names

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"


def generated_part(document: str) -> str:
    return document[document.index(BEGIN):document.index(END) + len(END) + 1]


def test_the_committed_reference_is_the_generated_one() -> None:
    document = OPERATIONS.read_text(encoding="utf-8")
    assert generated_part(document) == render(Settings), (
        "docs/operations.md is stale: run `atrium config doc --write docs/operations.md`")


def test_a_stale_reference_is_caught() -> None:
    document = OPERATIONS.read_text(encoding="utf-8")
    stale = document.replace("| `server.port` | `ATRIUM_SERVER__PORT` | integer, ≥ 1, ≤ 65535 | `8000` |",
                             "| `server.port` | `ATRIUM_SERVER__PORT` | integer, ≥ 1, ≤ 65535 | `8080` |")
    assert stale != document
    assert generated_part(stale) != render(Settings)
    assert replace_generated(stale, render(Settings)) == document


def test_every_setting_is_in_the_reference() -> None:
    text = render(Settings)
    section_envs = set()
    for section in sections(Settings):
        section_envs |= {row.env for row in section.rows}
    models = {name for name in _env_names(Settings, "ATRIUM_")
              if any(other.startswith(name + "__") for other in _env_names(Settings, "ATRIUM_"))}
    leaves = set(_env_names(Settings, "ATRIUM_")) - models
    assert leaves - section_envs == set()
    for env in leaves:
        assert f"`{env}`" in text
    assert "`ATRIUM_GATEWAY__PROVIDERS__<NAME>__API_KEY_FILE`" in text  # map entries are documented too


class Inner(BaseModel):
    """Inner ``part``: see :func:`somewhere`."""

    depth: int = Field(3, ge=0, le=9)  # how deep


class Sample(BaseModel):
    # Two lines of comment
    # above the field.
    mode: Literal["a", "b"] = "a"
    token: SecretStr | None = None  # never logged
    ratio: float = Field(0.5, gt=0, description="from the description | with a pipe")
    names: list[str] = Field(default_factory=lambda: ["x"], max_length=4)

    inner: Inner = Inner()
    maybe: Inner | None = None
    many: dict[str, Inner] = {}


def test_rows_come_from_the_code_and_its_comments() -> None:
    found = {section.path: section for section in sections(Sample)}
    assert list(found) == ["", "inner", "maybe", "many.<name>"]
    rows = {row.path: row for row in found[""].rows}
    assert rows["mode"].notes == "Two lines of comment above the field."
    assert rows["mode"].type == "`a` \\| `b`" and rows["mode"].default == "`a`"
    assert (rows["token"].type, rows["token"].default, rows["token"].notes) == ("secret (or unset)", "unset",
                                                                                "never logged")
    assert rows["ratio"].type == "number, > 0" and rows["ratio"].notes == "from the description \\| with a pipe"
    assert rows["names"].type == "list of string, at most 4 items" and rows["names"].default == "`[x]`"
    assert rows["many"].env == "ATRIUM_MANY"
    (depth,) = found["inner"].rows
    assert (depth.env, depth.type, depth.default, depth.notes) == ("ATRIUM_INNER__DEPTH", "integer, ≥ 0, ≤ 9",
                                                                   "`3`", "how deep")
    assert found["inner"].intro == "Inner `part`: see `somewhere`."
    assert "Unset by default" in found["maybe"].intro
    assert found["many.<name>"].rows[0].env == "ATRIUM_MANY__<NAME>__DEPTH"


def test_the_command_checks_and_rewrites(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from atrium.cli import app

    copy = tmp_path / "operations.md"
    copy.write_text(OPERATIONS.read_text(encoding="utf-8").replace("`8000`", "`8080`", 1), encoding="utf-8")

    def atrium(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["config", "doc", *args])
        return result.exit_code, result.stdout

    assert atrium("--write", str(copy), "--check")[0] == 1
    assert atrium("--write", str(copy))[0] == 0
    assert copy.read_text(encoding="utf-8") == OPERATIONS.read_text(encoding="utf-8")
    assert atrium("--write", str(copy), "--check")[0] == 0
    assert atrium() == (0, render(Settings))
