"""The settings declaration is the only source: the flags, `loraswap config` and the docs table
are generated from it, so none can drift from the others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap.cli import cli
from loraswap.settings import GLOBAL, SERVE, Settings, reference_markdown, specs

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _help(*args: str) -> str:
    out = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


def test_docs_configuration_is_the_generated_table() -> None:
    assert DOC.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run `loraswap config --markdown > docs/configuration.md`")


def test_every_setting_is_documented_once() -> None:
    table = reference_markdown()
    for spec in specs():
        assert len(re.findall(rf"^\| `{spec.env}` \|", table, flags=re.M)) == 1, spec.name
    assert [s.name for s in specs()] == list(Settings.model_fields)


def test_every_setting_is_a_flag_with_its_environment_variable() -> None:
    helps = {GLOBAL: _help(), SERVE: _help("serve")}
    assert {s.scope for s in specs()} == set(helps)
    for spec in specs():
        text = helps[spec.scope]
        for flag in spec.flag.split("/"):
            assert f"{flag} " in text, (spec.name, flag)
        assert f"[env: {spec.env};" in text, spec.name
    assert "--home" not in helps[SERVE]  # each flag in one place only


def test_config_prints_the_values_in_force(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("LORASWAP_MAX_N", "3")
    out = CliRunner().invoke(cli, ["--home", str(tmp_path), "config"])
    assert out.exit_code == 0, out.output
    rows = dict(line.split(None, 1) for line in out.output.splitlines())
    assert set(rows) == {*Settings.model_fields, "base_model_dir"}
    assert rows["max_n"] == "3" and rows["home"] == str(tmp_path)
    markdown = CliRunner().invoke(cli, ["config", "--markdown"])
    assert markdown.exit_code == 0 and markdown.output == reference_markdown()
