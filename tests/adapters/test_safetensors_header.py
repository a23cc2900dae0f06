from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from adapters.safetensors_header import SafetensorsError, read_header


def _write(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_reads_names_shapes_and_offsets(tmp_path: Path) -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
    }
    tensors = read_header(_write(tmp_path / "x.safetensors", header, bytes(32)))
    assert set(tensors) == {"a", "b"}
    assert tensors["a"].shape == (2, 3) and tensors["a"].dtype == "F32"
    assert tensors["b"].end - tensors["b"].start == 8


def test_matches_the_safetensors_library(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "lib.safetensors"
    save_file({"w": np.zeros((5, 7), dtype=np.float16), "v": np.ones(3, dtype=np.float32)}, path)
    tensors = read_header(path)
    assert {k: (t.dtype, t.shape) for k, t in tensors.items()} == {
        "w": ("F16", (5, 7)), "v": ("F32", (3,))
    }


@pytest.mark.parametrize(
    ("header", "data", "reason"),
    [
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(10), "truncated"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(20), "trailing"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, bytes(12), "needs 16 bytes"),
        ({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 4]}}, bytes(4), "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), "gapped"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4), "invalid shape"),
    ],
)
def test_refuses_files_that_do_not_match_their_header(
    tmp_path: Path, header: dict, data: bytes, reason: str
) -> None:
    path = _write(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(SafetensorsError, match=reason):
        read_header(path)
    # The reference implementation refuses the same files (with vaguer messages).
    from safetensors import SafetensorError, safe_open

    with pytest.raises(SafetensorError), safe_open(path, framework="numpy"):
        pass


def test_refuses_garbage(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(SafetensorsError, match="too short"):
        read_header(tmp_path / "short")
    (tmp_path / "huge").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(SafetensorsError, match="does not fit"):
        read_header(tmp_path / "huge")
    (tmp_path / "notjson").write_bytes(struct.pack("<Q", 3) + b"{x}")
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        read_header(tmp_path / "notjson")
