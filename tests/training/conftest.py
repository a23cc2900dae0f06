"""Session fixtures for training tests: one registry home, and the `upper` adapter trained
once (by the CLI) and shared by the acceptance, DPO/KTO and vLLM parity tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters import Registry
from loraswap.cli import cli
from training.taskworld import make_examples, write_jsonl


@pytest.fixture(scope="session")
def env(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("train-home")
    # A private copy: a rebuild of the shared base during the session (other tests build it)
    # must not change the model under adapters trained earlier in the session.
    base = home / "base"
    shutil.copytree(embedded_base, base)
    return {"LORASWAP_HOME": str(home), "LORASWAP_BASE_MODEL": str(base)}


@pytest.fixture(scope="session")
def run_cli(env: dict[str, str]) -> Callable[..., dict]:
    """Run a `loraswap` command with --json in the shared home; must exit 0."""

    def run(*args: str) -> dict:
        result = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return run


@pytest.fixture(scope="session")
def open_registry(env: dict[str, str]) -> Callable[[], Registry]:
    home = Path(env["LORASWAP_HOME"])
    return lambda: Registry(home / "loraswap.db", home / "store", Path(env["LORASWAP_BASE_MODEL"]))


@pytest.fixture(scope="session")
def upper(run_cli, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """upper@1: SFT on 1,500 task-world rows with 25% copy replay (the documented recipe)."""
    data = tmp_path_factory.mktemp("data") / "upper.jsonl"
    write_jsonl(make_examples("upper", "train", 1500, seed=0), data)
    return run_cli("train", "sft", "--data", str(data), "--name", "upper",
                   "--replay-copy", "0.25", "--no-progress")
