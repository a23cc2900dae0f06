"""The base description: linear shapes from headers, sharded bases, a weights fingerprint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import AdapterRejected, Registry, RegistryError
from adapters.basemodel import load_base


def _shard(base: Path, dest: Path) -> Path:
    """Re-save `base` as two shards plus model.safetensors.index.json (no torch needed)."""
    from safetensors.numpy import load_file, save_file

    dest.mkdir()
    for f in base.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dest / f.name)
    tensors = load_file(base / "model.safetensors")
    names = sorted(tensors, reverse=True)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, dest / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file))
    (dest / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return dest


def test_linear_shapes(base_dir: Path) -> None:
    shapes = load_base(base_dir).linear_shapes
    assert shapes["model.layers.0.self_attn.q_proj"] == (256, 256)
    assert shapes["model.layers.1.self_attn.k_proj"] == (128, 256)  # 2 KV heads x 64
    assert shapes["model.layers.0.mlp.down_proj"] == (256, 512)
    assert "model.layers.0.input_layernorm" not in shapes  # 1-D: not a linear layer


def test_sharded_base_same_fingerprint_and_validates(
    base_dir: Path, twin_base_dir: Path, tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    sharded = _shard(base_dir, tmp_path / "sharded")
    assert len(load_base(sharded).files) == 2
    assert load_base(sharded).fingerprint() == load_base(base_dir).fingerprint()
    assert load_base(twin_base_dir).fingerprint() != load_base(base_dir).fingerprint()
    reg = Registry(tmp_path / "db", tmp_path / "store", sharded)
    v = reg.add(make_adapter(), "on-shards")
    assert v.base_match == "fingerprint"  # trained on base_dir: same weights, other files
    reg.close()


def test_base_without_safetensors_is_explained(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(RegistryError, match="no safetensors weights"):
        load_base(tmp_path)


def test_rank_pattern(registry: Registry, make_adapter: Callable[..., Path]) -> None:
    v = registry.add(make_adapter(rank_pattern={"q_proj": 16}), "patterned")
    assert v.rank == 16
    with pytest.raises(AdapterRejected) as caught:
        registry.add(make_adapter(rank_pattern={"q_proj": 4}), "patterned")
    assert caught.value.rule == "rank-unsupported" and "rank_pattern['q_proj']" in str(caught.value)


def test_package_needs_neither_torch_nor_our_other_packages() -> None:
    code = ("import sys, adapters; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'peft', 'loraswap', 'server', 'router', 'training')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stdout + done.stderr
