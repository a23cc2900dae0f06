"""`loraswap adapters ...` through click, with LORASWAP_HOME in a temporary directory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap.cli import cli


@pytest.fixture
def run(tmp_path: Path, base_dir: Path) -> Callable[..., object]:
    env = {"LORASWAP_HOME": str(tmp_path / "home"), "LORASWAP_BASE_MODEL": str(base_dir)}

    def invoke(*args: str, code: int = 0):
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


def test_add_list_show_archive_delete(run: Callable, make_adapter: Callable[..., Path]) -> None:
    out = run("adapters", "add", str(make_adapter()), "--name", "support",
              "--description", "helpful", "--tag", "cs", "--tag", "v1").output
    assert "registered support@1 (rank 8, 7 target modules" in out
    added = json.loads(run("adapters", "add", str(make_adapter(r=16)), "--name", "support",
                           "--json").output)
    assert added["ref"] == "support@2" and added["rank"] == 16

    table = run("adapters", "list").output.splitlines()
    assert table[0].split()[:3] == ["REF", "STATUS", "RANK"]
    assert [line.split()[0] for line in table[1:]] == ["support@1", "support@2"]

    shown = run("adapters", "show", "support@1").output
    assert "rank:        8" in shown and "alpha:       8" in shown
    assert "targets:     down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in shown
    detail = json.loads(run("adapters", "show", "support@1", "--json").output)
    assert f"sha256:{detail['files']['adapter_model.safetensors']}" in shown
    assert f"({detail['size_bytes']} bytes)" in shown
    assert detail["tags"] == ["cs", "v1"] and detail["description"] == "helpful"

    assert run("adapters", "archive", "support").output.strip() == "archived support@2"
    assert [v["ref"] for v in json.loads(run("adapters", "list", "--json").output)] == ["support@1"]
    every = json.loads(run("adapters", "list", "--all", "--json").output)
    assert [(v["ref"], v["status"]) for v in every] == [("support@1", "active"),
                                                        ("support@2", "archived")]
    assert run("adapters", "delete", "support@2").output.strip() == "deleted support@2"
    result = run("adapters", "show", "support@2", code=1)
    assert result.stderr.strip() == "error: adapter support@2 was deleted"


def test_refusal_is_one_error_line(run: Callable, make_adapter: Callable[..., Path]) -> None:
    src = make_adapter()
    (src / "adapter_config.json").unlink()
    result = run("adapters", "add", str(src), "--name", "x", code=1)
    assert result.stderr.startswith("error: adapter 'x' refused [config-missing]: no adapter_config.json")
    assert len(result.stderr.strip().splitlines()) == 1
    assert run("adapters", "list", "--json").output.strip() == "[]"


def test_verify_reports_tampering_with_exit_1(
    run: Callable, make_adapter: Callable[..., Path]
) -> None:
    run("adapters", "add", str(make_adapter()), "--name", "a")
    assert "1 version(s) checked, 0 problem(s)" in run("adapters", "verify").output
    path = Path(json.loads(run("adapters", "show", "a", "--json").output)["path"])
    config = path / "adapter_config.json"
    os.chmod(config, 0o644)
    config.write_text(config.read_text().replace('"r": 8', '"r": 16'))
    out = run("adapters", "verify", code=1).output
    assert "TAMPERED a@1: adapter_config.json sha256" in out and "1 problem(s)" in out
    report = json.loads(run("adapters", "verify", "a@1", "--json", code=1).output)
    assert report["ok"] is False and report["problems"][0]["file"] == "adapter_config.json"
    assert "refused: adapter_config.json changed" in run("adapters", "show", "a", code=1).stderr


def test_force_base_flag(run: Callable, make_adapter: Callable[..., Path],
                         twin_base_dir: Path) -> None:
    src = make_adapter(twin_base_dir)
    assert "[base-mismatch]" in run("adapters", "add", str(src), "--name", "t", code=1).stderr
    out = run("adapters", "add", str(src), "--name", "t", "--force-base").output
    assert "base matched by forced" in out
