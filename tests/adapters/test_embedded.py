"""Acceptance on the real embedded base: a plain peft all-linear adapter registers and shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap.cli import cli


@pytest.mark.slow
def test_plain_peft_adapter_on_embedded_base(
    embedded_base: Path, make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    src = make_adapter(embedded_base)
    env = {"LORASWAP_HOME": str(tmp_path / "home"), "LORASWAP_BASE_MODEL": str(embedded_base)}
    runner = CliRunner()
    added = runner.invoke(cli, ["adapters", "add", str(src), "--name", "plain", "--json"], env=env)
    assert added.exit_code == 0, added.output
    v = json.loads(added.output)
    assert v["base_match"] == "path" and v["rank"] == 8
    shown = runner.invoke(cli, ["adapters", "show", "plain"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "rank:        8" in shown.output
    assert "targets:     down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in shown.output
    assert f"({v['size_bytes']} bytes)" in shown.output
    assert f"sha256:{v['files']['adapter_model.safetensors']}" in shown.output
