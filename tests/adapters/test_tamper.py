"""A store file changed after registration is reported by verify and refused on look-up."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import AdapterTampered, Registry


def _flip_byte(path: Path, offset: int = -5) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only the content differs


def test_modified_file_is_reported_and_refused(
    registry: Registry, make_adapter: Callable[..., Path]
) -> None:
    good = registry.add(make_adapter(), "good")
    bad = registry.add(make_adapter(), "bad")
    assert registry.get("bad") == bad  # looked up (and hashed) once before the change
    assert registry.verify() == []
    weights = bad.path / "adapter_model.safetensors"
    _flip_byte(weights)

    problems = registry.verify()
    assert [(p.ref, p.file) for p in problems] == [("bad@1", "adapter_model.safetensors")]
    assert problems[0].expected == bad.files["adapter_model.safetensors"] != problems[0].actual
    assert registry.verify("good") == []
    with pytest.raises(AdapterTampered, match="bad@1 refused: adapter_model.safetensors changed"):
        registry.get("bad")
    with pytest.raises(AdapterTampered):
        registry.get("bad@1", verify=True)
    assert registry.get("good", verify=True) == good
    # A fresh process (no cached hashes) refuses it too.
    fresh = Registry(registry.db_path, registry.store_dir, registry.base_model_dir)
    with pytest.raises(AdapterTampered):
        fresh.get("bad")
    assert len(fresh.verify()) == 1
    fresh.close()


def test_missing_file_is_reported(registry: Registry, make_adapter: Callable[..., Path]) -> None:
    v = registry.add(make_adapter(), "gone")
    os.chmod(v.path, 0o755)
    (v.path / "adapter_config.json").unlink()
    problems = registry.verify("gone@1")
    assert [(p.file, p.actual) for p in problems] == [("adapter_config.json", None)]
    with pytest.raises(AdapterTampered, match="adapter_config.json is missing"):
        registry.get("gone")
