"""Read a safetensors file's header by hand: names, dtypes, shapes, without torch.

The format is an 8-byte little-endian header length, a JSON header, then the raw
tensor bytes. We check that the header describes the file exactly (every tensor's
byte range fits its dtype and shape, ranges tile the data area, the file is not
truncated or padded), which is what catches a half-copied or corrupted adapter
before the engine sees it.

Why not `safetensors.safe_open`: it refuses the same files, but with one message for a
truncated and a padded file alike and none naming the byte counts, and it does not expose
where each tensor's bytes lie, which the base fingerprint hashes without loading tensors
(its numpy reader cannot load bf16 at all). Where offsets and diagnoses do not matter (the
engine's zero adapter), the package is used instead; tests hold the two to the same answers.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DTYPE_SIZES", "SafetensorsError", "TensorInfo", "read_header"]

# Element sizes of the dtypes the safetensors spec defines (F8 variants are 1 byte).
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit


class SafetensorsError(ValueError):
    """The file is not a well-formed safetensors file; the message says what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offsets of the tensor's bytes
    end: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensors by name; raises SafetensorsError if the header does not match the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path.name}: {size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise SafetensorsError(
                f"{path.name}: header length {n} does not fit the file ({size} bytes): "
                "truncated or not safetensors"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path.name}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path.name}: header is not a JSON object")
    base = 8 + n
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _entry(path, name, entry, base)
    spans = sorted((t.start, t.end, t.name) for t in tensors.values())
    cursor = base
    for start, end, name in spans:
        if start != cursor:
            raise SafetensorsError(
                f"{path.name}: tensor {name} starts at byte {start - base} of the data area, "
                f"expected {cursor - base} (overlapping or gapped tensors)"
            )
        cursor = end
    if cursor > size:
        raise SafetensorsError(
            f"{path.name}: truncated: the header describes {cursor} bytes, the file has {size}"
        )
    if cursor < size:
        raise SafetensorsError(
            f"{path.name}: {size - cursor} unexpected trailing bytes after the last tensor"
        )
    return tensors


def _entry(path: Path, name: str, entry: object, base: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise SafetensorsError(f"{path.name}: header entry for {name} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise SafetensorsError(f"{path.name}: tensor {name} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise SafetensorsError(f"{path.name}: tensor {name} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise SafetensorsError(f"{path.name}: tensor {name} has invalid data_offsets {offsets!r}")
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise SafetensorsError(
            f"{path.name}: tensor {name} ({dtype} {shape}) needs {expected} bytes, "
            f"its data_offsets span {offsets[1] - offsets[0]}"
        )
    return TensorInfo(name, dtype, tuple(shape), base + offsets[0], base + offsets[1])
