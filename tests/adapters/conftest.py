"""Fixtures for the registry tests: tiny bases, real peft adapters, a registry, snapshots."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import Registry


@pytest.fixture(scope="session")
def base_dir(tiny_llama_factory: Callable[..., Path]) -> Path:
    """A random-init Llama with the embedded base's architecture."""
    return tiny_llama_factory()


@pytest.fixture(scope="session")
def other_base_dir(tiny_llama_factory: Callable[..., Path]) -> Path:
    """A different architecture: adapters made for it must not fit `base_dir`."""
    return tiny_llama_factory(hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="session")
def twin_base_dir(tiny_llama_factory: Callable[..., Path]) -> Path:
    """Same shapes as `base_dir`, different model (its config differs): a different base."""
    return tiny_llama_factory(rms_norm_eps=1e-5)


@pytest.fixture(scope="session")
def _adapter_cache(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {}


@pytest.fixture
def make_adapter(
    _adapter_cache: dict, tmp_path_factory: pytest.TempPathFactory, base_dir: Path
) -> Callable[..., Path]:
    """`make_adapter(base=None, **LoraConfig kwargs)` -> a fresh copy of a real peft adapter.

    Defaults: r=8, target_modules="all-linear", init_lora_weights=False. Built with
    plain peft on a model loaded from the base directory, so `base_model_name_or_path`
    is that directory, as it is for an operator's own adapters.
    """

    def make(base: Path | None = None, **lora: object) -> Path:
        base = base or base_dir
        key = (str(base), json.dumps(lora, sort_keys=True))
        if key not in _adapter_cache:
            import torch
            from peft import LoraConfig, get_peft_model
            from transformers import AutoModelForCausalLM

            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_pretrained(base)
            config = {"r": 8, "target_modules": "all-linear", "init_lora_weights": False, **lora}
            made = tmp_path_factory.mktemp("peft-adapter")
            get_peft_model(model, LoraConfig(**config)).save_pretrained(made)
            _adapter_cache[key] = made
        copy = tmp_path_factory.mktemp("adapter") / "adapter"
        shutil.copytree(_adapter_cache[key], copy)
        return copy

    return make


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def registry(home: Path, base_dir: Path) -> Registry:
    reg = Registry(home / "loraswap.db", home / "store", base_dir, max_rank=64)
    yield reg
    reg.close()


def snapshot_state(reg: Registry) -> tuple[dict, dict]:
    """Every row of every table, and every path and byte under the store."""
    con = sqlite3.connect(reg.db_path)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )]
        rows = {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        con.close()
    tree = {
        str(p.relative_to(reg.store_dir)): (p.read_bytes() if p.is_file() else "dir", p.stat().st_mode)
        for p in sorted(reg.store_dir.rglob("*"))
    }
    return rows, tree


@pytest.fixture
def snapshot() -> Callable[[Registry], tuple[dict, dict]]:
    return snapshot_state
